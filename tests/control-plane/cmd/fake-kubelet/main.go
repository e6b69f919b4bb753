// Command fake-kubelet answers the kubelet API that kube-apiserver calls on a node's kubelet
// (container logs, exec, attach, port forwarding, health and a few read-only endpoints) for pods
// that "run" on a test node without any container: every pod and container exists, and their
// logs, commands and ports behave as logs.go, commands.go and container.go describe. Test
// infrastructure only; the product is Rust.
//
// It serves HTTPS with a self-signed certificate made at start, and prints one line to stdout
// once it listens ("listening on HOST:PORT"); everything else goes to stderr.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on (port 0 picks a free port)")
	clientCA := flag.String("client-ca", "", "PEM file of the CA whose client certificates are required (none: any caller)")
	parentPID := flag.Int("parent-pid", 0, "exit when this process is gone (checked every second)")
	nodeName := flag.String("node-name", "fake-node", "the node name /stats/summary reports")
	flag.Parse()
	log.SetOutput(os.Stderr)
	log.SetPrefix("fake-kubelet: ")
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)

	if err := run(*listen, *clientCA, *parentPID, *nodeName); err != nil {
		log.Fatal(err)
	}
}

func run(listen, clientCA string, parentPID int, nodeName string) error {
	tlsConfig, err := serverTLS(listen, clientCA)
	if err != nil {
		return err
	}
	listener, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	if parentPID > 0 {
		go watchParent(parentPID)
	}
	server := &http.Server{
		Handler:           logRequests(routes(nodeName)),
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          log.Default(),
	}
	fmt.Fprintf(os.Stdout, "listening on %s\n", listener.Addr())
	os.Stdout.Sync()
	return server.ServeTLS(listener, "", "")
}

// routes maps the kubelet's paths; the pod UID segment of exec, attach and portForward is
// optional, as on a kubelet.
func routes(nodeName string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", serveLogs)
	for _, method := range []string{"GET", "POST"} {
		mux.HandleFunc(method+" /exec/{ns}/{pod}/{container}", serveExec)
		mux.HandleFunc(method+" /exec/{ns}/{pod}/{uid}/{container}", serveExec)
		mux.HandleFunc(method+" /attach/{ns}/{pod}/{container}", serveAttach)
		mux.HandleFunc(method+" /attach/{ns}/{pod}/{uid}/{container}", serveAttach)
		mux.HandleFunc(method+" /portForward/{ns}/{pod}", servePortForward)
		mux.HandleFunc(method+" /portForward/{ns}/{pod}/{uid}", servePortForward)
	}
	mux.HandleFunc("GET /runningpods/", serveRunningPods)
	mux.HandleFunc("GET /stats/summary", func(w http.ResponseWriter, r *http.Request) {
		serveSummary(w, r, nodeName)
	})
	mux.HandleFunc("GET /metrics/resource", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	})
	return mux
}

// logRequests logs each request's method, path and query on stderr, with the client
// certificate's subject when there is one.
func logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who := "anonymous"
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			who = r.TLS.PeerCertificates[0].Subject.String()
		}
		log.Printf("%s %s (%s)", r.Method, r.URL.RequestURI(), who)
		next.ServeHTTP(w, r)
	})
}

// serverTLS makes a self-signed serving certificate for loopback and the listen host, and
// requires client certificates under clientCA when it is given.
func serverTLS(listen, clientCA string) (*tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	template := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "fake-kubelet"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if host, _, err := net.SplitHostPort(listen); err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			template.IPAddresses = append(template.IPAddresses, ip)
		} else if host != "" && ip == nil {
			template.DNSNames = append(template.DNSNames, host)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	config := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS12,
	}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, fmt.Errorf("reading --client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--client-ca %s holds no PEM certificate", clientCA)
		}
		config.ClientCAs = pool
		config.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return config, nil
}

// watchParent exits the process once pid is gone (or only a zombie is left of it).
func watchParent(pid int) {
	for range time.Tick(time.Second) {
		err := syscall.Kill(pid, 0)
		if errors.Is(err, syscall.ESRCH) || zombie(pid) {
			log.Printf("parent process %d is gone; exiting", pid)
			os.Exit(0)
		}
	}
}

// zombie says whether /proc shows pid as a zombie (false where there is no /proc).
func zombie(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may hold spaces.
	text := string(stat)
	end := strings.LastIndexByte(text, ')')
	return end >= 0 && strings.HasPrefix(text[end+1:], " Z")
}
