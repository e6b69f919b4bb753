package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"time"

	"k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// The kubelet's defaults for streaming connections.
const (
	streamIdleTimeout     = 4 * time.Hour
	streamCreationTimeout = remotecommand.DefaultStreamCreationTimeout
)

// container is one container of a pod that runs nowhere; it serves exec, attach and port
// forwarding for it with the kubelet's own streaming code.
type container struct {
	namespace, pod, name string
}

func requestContainer(r *http.Request) *container {
	return &container{namespace: r.PathValue("ns"), pod: r.PathValue("pod"), name: r.PathValue("container")}
}

// serveExec answers /exec/{ns}/{pod}[/{uid}]/{container}?command=...
func serveExec(w http.ResponseWriter, r *http.Request) {
	options, err := remotecommand.NewOptions(r)
	if err != nil {
		streaming.WriteError(err, w)
		return
	}
	command := r.URL.Query()["command"]
	if len(command) == 0 {
		plainError(w, http.StatusBadRequest, "no command given")
		return
	}
	c := requestContainer(r)
	remotecommand.ServeExec(w, r, c, c.pod, r.PathValue("uid"), c.name, command, options,
		streamIdleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

// serveAttach answers /attach/{ns}/{pod}[/{uid}]/{container}.
func serveAttach(w http.ResponseWriter, r *http.Request) {
	options, err := remotecommand.NewOptions(r)
	if err != nil {
		streaming.WriteError(err, w)
		return
	}
	c := requestContainer(r)
	remotecommand.ServeAttach(w, r, c, c.pod, r.PathValue("uid"), c.name, options,
		streamIdleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

// servePortForward answers /portForward/{ns}/{pod}[/{uid}]: every port is an echo server.
func servePortForward(w http.ResponseWriter, r *http.Request) {
	options, err := portforward.NewV4Options(r)
	if err != nil {
		streaming.WriteError(err, w)
		return
	}
	c := requestContainer(r)
	portforward.ServePortForward(w, r, c, c.pod, r.PathValue("uid"), options,
		streamIdleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
}

// ExecInContainer runs one of the built-in commands (see run in commands.go); a non-zero exit
// goes back as the exit error the streaming code turns into the exit code.
func (c *container) ExecInContainer(ctx context.Context, _, _, _ string, cmd []string, in io.Reader,
	out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	log.Printf("exec in %s/%s/%s: %q (stdin %t, stdout %t, stderr %t, tty %t)",
		c.namespace, c.pod, c.name, cmd, in != nil, out != nil, errOut != nil, tty)
	session := c.session(ctx, in, out, errOut, tty, resize)
	code := session.run(cmd)
	log.Printf("exec in %s/%s/%s: %q exited with code %d", c.namespace, c.pod, c.name, cmd, code)
	if code == 0 {
		return nil
	}
	return utilexec.CodeExitError{Err: fmt.Errorf("command exited with code %d", code), Code: code}
}

// AttachContainer is a container whose process echoes: stdin comes back on stdout until it
// closes. Without stdin it keeps the session open until the client goes away.
func (c *container) AttachContainer(ctx context.Context, _, _, _ string, in io.Reader,
	out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	log.Printf("attach to %s/%s/%s (stdin %t, stdout %t, stderr %t, tty %t)",
		c.namespace, c.pod, c.name, in != nil, out != nil, errOut != nil, tty)
	session := c.session(ctx, in, out, errOut, tty, resize)
	defer log.Printf("attach to %s/%s/%s ended", c.namespace, c.pod, c.name)
	if in == nil {
		select {
		case <-ctx.Done():
		case <-session.gone:
		}
		return nil
	}
	_, err := io.Copy(session.out, in)
	return err
}

// PortForward echoes what the client sends on stream until it closes its side.
func (c *container) PortForward(_ context.Context, _, _ string, port int32, stream io.ReadWriteCloser) error {
	log.Printf("port forward to %s/%s port %d", c.namespace, c.pod, port)
	n, err := io.Copy(stream, stream)
	log.Printf("port forward to %s/%s port %d: echoed %d bytes", c.namespace, c.pod, port, n)
	return err
}

// session builds the context one command runs in, logging terminal resizes on stderr.
func (c *container) session(ctx context.Context, in io.Reader, out, errOut io.WriteCloser, tty bool,
	resize <-chan remotecommand.TerminalSize) *session {
	s := &session{
		ctx:  ctx,
		env:  map[string]string{"HOSTNAME": c.pod, "POD_NAMESPACE": c.namespace},
		in:   in,
		out:  io.Discard,
		err:  io.Discard,
		tty:  tty,
		gone: watchGone(out, errOut),
	}
	if out != nil {
		s.out = out
	}
	s.rawOut = s.out
	if errOut != nil {
		s.err = errOut
	}
	if tty {
		// A terminal: output lines end in CR LF, and what a process writes to stderr shows there too.
		s.out = &crlfWriter{w: s.out}
		s.err = s.out
	}
	if resize != nil {
		go func() {
			for size := range resize {
				log.Printf("terminal of %s/%s/%s resized to %d columns, %d rows",
					c.namespace, c.pod, c.name, size.Width, size.Height)
			}
		}()
	}
	return s
}

// watchGone closes its channel when the client's connection goes away: the streams of a
// hijacked connection do not cancel the request's context, but reading from the first output
// stream that can be read ends then (the client never writes to it).
func watchGone(streams ...io.WriteCloser) <-chan struct{} {
	gone := make(chan struct{})
	for _, stream := range streams {
		if reader, ok := stream.(io.Reader); ok && stream != nil {
			go func() {
				_, _ = io.Copy(io.Discard, reader)
				close(gone)
			}()
			break
		}
	}
	return gone
}

// crlfWriter turns each LF into CR LF, as a terminal's output processing does.
type crlfWriter struct {
	w    io.Writer
	last byte
}

func (c *crlfWriter) Write(p []byte) (int, error) {
	converted := make([]byte, 0, len(p)+8)
	for _, b := range p {
		if b == '\n' && c.last != '\r' {
			converted = append(converted, '\r')
		}
		converted = append(converted, b)
		c.last = b
	}
	if _, err := c.w.Write(converted); err != nil {
		return 0, err
	}
	return len(p), nil
}
