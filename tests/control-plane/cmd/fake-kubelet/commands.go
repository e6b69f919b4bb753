package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"path"
	"strconv"
	"strings"
	"time"
)

// session is where one exec'd command runs: the container's environment and the client's
// streams (out and err discard what the client did not ask for; with a terminal both are the
// terminal).
type session struct {
	ctx     context.Context
	env     map[string]string
	in      io.Reader // nil without stdin
	out     io.Writer
	err     io.Writer
	tty     bool
	gone    <-chan struct{} // closed when the client's connection is gone
	rawOut  io.Writer       // the terminal without output processing (tty only)
	stopped bool            // an exit command ran
}

// run runs argv as the container's runtime would, with a handful of commands built in, and
// returns its exit code. A shell (sh, bash, ash, dash) runs `-c SCRIPT`, or a script read from
// stdin, or with a terminal and no script echoes what is typed until stdin closes or an exit
// line is typed.
func (s *session) run(argv []string) int {
	if len(argv) == 0 {
		return 0
	}
	switch path.Base(argv[0]) {
	case "sh", "bash", "ash", "dash":
		if len(argv) >= 3 && argv[1] == "-c" {
			return s.script(argv[2])
		}
		if s.in == nil {
			return 0
		}
		if s.tty {
			return s.terminal()
		}
		script, _ := io.ReadAll(s.in)
		return s.script(string(script))
	case "echo":
		args, newline := argv[1:], true
		if len(args) > 0 && args[0] == "-n" {
			args, newline = args[1:], false
		}
		text := strings.Join(args, " ")
		if newline {
			text += "\n"
		}
		io.WriteString(s.out, text)
		return 0
	case "cat":
		if len(argv) > 1 {
			for _, file := range argv[1:] {
				if file != "-" {
					fmt.Fprintf(s.err, "cat: %s: No such file or directory\n", file)
					return 1
				}
			}
		}
		if s.in != nil {
			io.Copy(s.out, s.in)
		}
		return 0
	case "env", "printenv":
		fmt.Fprintf(s.out, "HOSTNAME=%s\nPOD_NAMESPACE=%s\n", s.env["HOSTNAME"], s.env["POD_NAMESPACE"])
		return 0
	case "hostname":
		fmt.Fprintln(s.out, s.env["HOSTNAME"])
		return 0
	case "true":
		return 0
	case "false":
		return 1
	case "exit":
		s.stopped = true
		if len(argv) < 2 {
			return 0
		}
		code, err := strconv.Atoi(argv[1])
		if err != nil || code < 0 {
			fmt.Fprintf(s.err, "sh: exit: Illegal number: %s\n", argv[1])
			return 2
		}
		return code & 0xff
	case "sleep":
		if len(argv) < 2 {
			fmt.Fprintln(s.err, "sleep: missing operand")
			return 1
		}
		seconds, err := strconv.ParseFloat(argv[1], 64)
		if argv[1] == "infinity" {
			seconds, err = math.Inf(1), nil
		}
		if err != nil || seconds < 0 {
			fmt.Fprintf(s.err, "sleep: invalid number '%s'\n", argv[1])
			return 1
		}
		s.sleep(seconds)
		return 0
	default:
		fmt.Fprintf(s.err, "%s: not found\n", argv[0])
		return 127
	}
}

// sleep waits seconds, or until the client goes away.
func (s *session) sleep(seconds float64) {
	var timeout <-chan time.Time
	if !math.IsInf(seconds, 1) && seconds < float64(math.MaxInt64/int64(time.Second)) {
		timer := time.NewTimer(time.Duration(seconds * float64(time.Second)))
		defer timer.Stop()
		timeout = timer.C
	}
	select {
	case <-timeout:
	case <-s.ctx.Done():
	case <-s.gone:
	}
}

// script runs a shell script: commands split by newlines, ";", "&&" and "||", each run by run;
// an exit command ends it. The code is the last command's.
func (s *session) script(text string) int {
	code := 0
	for _, step := range parseScript(text, s.env) {
		if (step.op == "&&" && code != 0) || (step.op == "||" && code == 0) {
			continue
		}
		code = s.run(step.argv)
		if s.stopped {
			break
		}
	}
	return code
}

// terminal is an interactive shell on a terminal: it echoes what is typed (Enter as CR LF)
// until stdin closes, an "exit [N]" line is entered (exit code N) or Ctrl-D is typed on an empty
// line.
func (s *session) terminal() int {
	reader := bufio.NewReader(s.in)
	var line []byte
	for {
		b, err := reader.ReadByte()
		if err != nil {
			return 0
		}
		switch b {
		case '\r', '\n':
			io.WriteString(s.rawOut, "\r\n")
			words := strings.Fields(string(line))
			line = line[:0]
			if len(words) > 0 && words[0] == "exit" {
				return s.run(words)
			}
		case 4: // Ctrl-D
			if len(line) == 0 {
				io.WriteString(s.rawOut, "exit\r\n")
				return 0
			}
		case 0x7f, '\b':
			if len(line) > 0 {
				line = line[:len(line)-1]
				io.WriteString(s.rawOut, "\b \b")
			}
		default:
			line = append(line, b)
			s.rawOut.Write([]byte{b})
		}
	}
}

// step is one command of a script and the operator before it ("" first, ";", "&&" or "||").
type step struct {
	op   string
	argv []string
}

// parseScript splits a script into commands of words, with sh's quoting (single quotes,
// double quotes, backslashes), comments, and $NAME / ${NAME} from env (unknown names are empty).
func parseScript(text string, env map[string]string) []step {
	var (
		steps  []step
		op     string
		argv   []string
		word   strings.Builder
		inWord bool
	)
	endWord := func() {
		if inWord {
			argv = append(argv, word.String())
		}
		word.Reset()
		inWord = false
	}
	endCommand := func(next string) {
		endWord()
		if len(argv) > 0 {
			steps = append(steps, step{op: op, argv: argv})
		}
		argv, op = nil, next
	}
	expand := func(i int) int { // text[i] is '$'; returns the index after the reference
		j, name := i+1, ""
		if j < len(text) && text[j] == '{' {
			if end := strings.IndexByte(text[j:], '}'); end > 0 {
				name, j = text[j+1:j+end], j+end+1
			}
		} else {
			for j < len(text) && (text[j] == '_' || isAlnum(text[j])) {
				j++
			}
			name = text[i+1 : j]
		}
		if name == "" {
			word.WriteByte('$')
			return i + 1
		}
		word.WriteString(env[name])
		return j
	}
	for i := 0; i < len(text); {
		c := text[i]
		switch {
		case c == '\'':
			inWord = true
			end := strings.IndexByte(text[i+1:], '\'')
			if end < 0 {
				end = len(text) - i - 1
			}
			word.WriteString(text[i+1 : i+1+end])
			i += end + 2
		case c == '"':
			inWord = true
			i++
			for i < len(text) && text[i] != '"' {
				switch {
				case text[i] == '\\' && i+1 < len(text) && strings.IndexByte("\"\\$`", text[i+1]) >= 0:
					word.WriteByte(text[i+1])
					i += 2
				case text[i] == '$':
					i = expand(i)
				default:
					word.WriteByte(text[i])
					i++
				}
			}
			i++
		case c == '\\' && i+1 < len(text):
			inWord = true
			if text[i+1] != '\n' {
				word.WriteByte(text[i+1])
			}
			i += 2
		case c == '$':
			inWord = true
			i = expand(i)
		case c == '#' && !inWord:
			for i < len(text) && text[i] != '\n' {
				i++
			}
		case c == ';' || c == '\n':
			endCommand(";")
			i++
		case strings.HasPrefix(text[i:], "&&") || strings.HasPrefix(text[i:], "||"):
			endCommand(text[i : i+2])
			i += 2
		case c == ' ' || c == '\t':
			endWord()
			i++
		default:
			inWord = true
			word.WriteByte(c)
			i++
		}
	}
	endCommand("")
	return steps
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
