package main

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Each container has written this many lines by the time anyone asks.
const initialLines = 10

// followInterval is how often a followed container writes one more line.
const followInterval = 200 * time.Millisecond

// logBase is the time of line 1; line N was written N-1 seconds later. The nanoseconds have no
// trailing zero, so RFC 3339 with nanoseconds and the kubelet's fixed-width form agree.
var logBase = time.Date(2025, time.January, 1, 0, 0, 0, 123456789, time.UTC)

// serveLogs answers /containerLogs/{ns}/{pod}/{container}: line N reads
// "line N of NS/POD/CONTAINER". tailLines, limitBytes, timestamps, follow and previous are
// honoured; sinceSeconds, sinceTime and stream are accepted and ignored.
func serveLogs(w http.ResponseWriter, r *http.Request) {
	ns, pod, container := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container")
	query := r.URL.Query()
	// The kubelet's older spelling, tail=N, wins over tailLines; tail=all is everything.
	if t := query.Get("tail"); t != "" {
		query.Del("tailLines")
		if t != "all" {
			query.Set("tailLines", t)
		}
	}
	tail, tailErr := intParam(query, "tailLines", 0)
	limit, limitErr := intParam(query, "limitBytes", 1)
	err := errors.Join(tailErr, limitErr)
	if err != nil {
		plainError(w, http.StatusBadRequest, err.Error())
		return
	}
	timestamps, follow, previous := boolParam(query, "timestamps"), boolParam(query, "follow"), boolParam(query, "previous")
	if previous {
		plainError(w, http.StatusBadRequest,
			fmt.Sprintf("previous terminated container %q in pod %q not found", container, pod))
		return
	}

	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	control := http.NewResponseController(w)
	out := &limitWriter{w: w, left: limit}
	write := func(n int) bool {
		line := fmt.Sprintf("line %d of %s/%s/%s\n", n, ns, pod, container)
		if timestamps {
			line = logBase.Add(time.Duration(n-1)*time.Second).Format(time.RFC3339Nano) + " " + line
		}
		_, err := io.WriteString(out, line)
		return err == nil
	}
	first := 1
	if tail >= 0 && tail < initialLines {
		first = initialLines - tail + 1
	}
	for n := first; n <= initialLines; n++ {
		if !write(n) {
			return
		}
	}
	_ = control.Flush()
	if !follow {
		return
	}
	ticker := time.NewTicker(followInterval)
	defer ticker.Stop()
	for n := initialLines + 1; ; n++ {
		select {
		case <-r.Context().Done():
			log.Printf("stopped following %s/%s/%s after line %d: the client went away", ns, pod, container, n-1)
			return
		case <-ticker.C:
		}
		if !write(n) || control.Flush() != nil {
			return
		}
	}
}

// intParam reads a whole number parameter that must be at least min; -1 when absent.
func intParam(query url.Values, name string, min int) (int, error) {
	text := query.Get(name)
	if text == "" {
		return -1, nil
	}
	value, err := strconv.Atoi(text)
	if err != nil {
		return -1, fmt.Errorf("%s: %q is not a whole number", name, text)
	}
	if value < min {
		return -1, fmt.Errorf("%s must be at least %d", name, min)
	}
	return value, nil
}

// boolParam reads a flag parameter as Kubernetes decodes query booleans: absent, "0" and
// "false" are false, anything else is true.
func boolParam(query url.Values, name string) bool {
	values, ok := query[name]
	if !ok || len(values) == 0 {
		return false
	}
	return values[0] != "0" && !strings.EqualFold(values[0], "false")
}

// plainError answers status with message as plain text (no trailing newline, as a kubelet).
func plainError(w http.ResponseWriter, status int, message string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	io.WriteString(w, message)
}

// limitWriter passes on at most left bytes (all when left is negative), cutting the write that
// reaches the limit, and then fails.
type limitWriter struct {
	w    io.Writer
	left int
}

var errLimitReached = errors.New("limitBytes reached")

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.left < 0 {
		return l.w.Write(p)
	}
	if l.left == 0 {
		return 0, errLimitReached
	}
	cut := p
	if len(cut) > l.left {
		cut = cut[:l.left]
	}
	n, err := l.w.Write(cut)
	l.left -= n
	if err == nil && n < len(p) {
		err = errLimitReached
	}
	return n, err
}
