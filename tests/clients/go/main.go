// A small Go client of Ollama's API for the live TLS tests: Go's own net/http and crypto/tls
// (what the tracer's Go uprobes probe), built by the test with the system's Go toolchain.
//
// Client mode (default): a session against --base-url (https://, trusting --ca), one JSON line
// per call with what the client saw at the TLS layer — the same fields as the Python drivers
// (tests/clients/common.py): driver, call, route, model, stream, local_addr, local_port,
// t_request_write_ns (just before the request's first write; write_stamp "tls"),
// t_first_output_read_ns (just after the read that completed the first stream unit carrying
// output; first_output_exact false when that read took later bytes too, with
// t_first_output_prev_read_ns the read before), input_tokens, output_tokens, finish_reason,
// tool_calls, embeddings, error. With --wait it reads one line from stdin first (the test lets
// it go once the tracer has probed this binary). Exit status 1 if a call failed.
//
// Benchmark modes (cargo xtask bench --only tls): --bench-latency N sends N small calls
// (GET /api/version) one after the other on one keep-alive connection and prints their
// latency (p50, p99, mean, µs); --bench-streams S --secs T keeps S streamed chats going at
// once for T seconds (model --model, e.g. a stand-in @synth model) and prints calls and
// chunks received.
//
// Proxy mode (--serve ADDR --upstream URL --cert PEM --key PEM [--ca PEM]): an HTTPS reverse
// proxy in front of another server (https:// trusting --ca, or plain HTTP), flushing every
// write (so streams stay streams); prints
// "listening on ADDR" once listening. Client and proxy on one host: both ends of each TLS
// connection are Go processes the tracer probes.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

type event struct {
	kind  byte // 'w' or 'r'
	t     int64
	local *net.TCPAddr
	data  []byte
}

// wire logs the TLS layer's writes and reads of every connection the client opens.
type wire struct {
	mu     sync.Mutex
	events []event
}

func (w *wire) log(e event) {
	w.mu.Lock()
	w.events = append(w.events, e)
	w.mu.Unlock()
}

func (w *wire) mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.events)
}

func (w *wire) since(m int) []event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]event(nil), w.events[m:]...)
}

// timedConn is a *tls.Conn whose Write and Read are stamped: its Write and Read are what the
// tracer probes.
type timedConn struct {
	*tls.Conn
	w     *wire
	local *net.TCPAddr
}

func (c *timedConn) Write(b []byte) (int, error) {
	t := time.Now().UnixNano()
	n, err := c.Conn.Write(b)
	if n > 0 {
		c.w.log(event{'w', t, c.local, nil})
	}
	return n, err
}

func (c *timedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.w.log(event{'r', time.Now().UnixNano(), c.local, append([]byte(nil), b[:n]...)})
	}
	return n, err
}

func nonEmpty(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	}
	return true
}

// hasOutput: one stream unit carries output (native or OpenAI shapes).
func hasOutput(obj map[string]any) bool {
	if nonEmpty(obj["response"]) || nonEmpty(obj["thinking"]) {
		return true
	}
	if m, ok := obj["message"].(map[string]any); ok && (nonEmpty(m["content"]) || nonEmpty(m["thinking"]) || nonEmpty(m["tool_calls"])) {
		return true
	}
	if chs, ok := obj["choices"].([]any); ok {
		for _, ch := range chs {
			c, _ := ch.(map[string]any)
			d, _ := c["delta"].(map[string]any)
			if nonEmpty(c["text"]) || nonEmpty(d["content"]) || nonEmpty(d["tool_calls"]) {
				return true
			}
		}
	}
	return false
}

// firstOutputRead: the read that completed the first stream unit carrying output (its time,
// whether it ended there, the read before), as common.first_output_read does.
func firstOutputRead(reads []event) (int64, bool, int64, bool) {
	var raw []byte
	var ends []int
	for _, r := range reads {
		raw = append(raw, r.data...)
		ends = append(ends, len(raw))
	}
	start := bytes.Index(raw, []byte("HTTP/1."))
	if start < 0 {
		return 0, false, 0, false
	}
	headEnd := bytes.Index(raw[start:], []byte("\r\n\r\n"))
	if headEnd < 0 {
		return 0, false, 0, false
	}
	head := strings.ToLower(string(raw[start : start+headEnd]))
	bodyAt := start + headEnd + 4
	chunked := strings.Contains(head, "transfer-encoding: chunked")
	var body []byte
	var offsets []int
	if chunked {
		i := bodyAt
		for {
			eol := bytes.Index(raw[i:], []byte("\r\n"))
			if eol < 0 {
				break
			}
			size, err := strconv.ParseInt(strings.Split(string(raw[i:i+eol]), ";")[0], 16, 64)
			if err != nil || size == 0 {
				break
			}
			from := i + eol + 2
			to := from + int(size)
			if to > len(raw) {
				to = len(raw)
			}
			for k := from; k < to; k++ {
				body = append(body, raw[k])
				offsets = append(offsets, k)
			}
			i = to + 2
			if i >= len(raw) {
				break
			}
		}
	} else {
		body = raw[bodyAt:]
		for k := bodyAt; k < len(raw); k++ {
			offsets = append(offsets, k)
		}
	}
	sse := strings.Contains(head, "text/event-stream")
	sep := []byte("\n")
	if sse {
		sep = []byte("\n\n")
	}
	i := 0
	for {
		j := bytes.Index(body[i:], sep)
		if j < 0 {
			return 0, false, 0, false
		}
		unit := body[i : i+j]
		i += j + len(sep)
		if sse {
			var data []byte
			for _, line := range bytes.Split(unit, []byte("\n")) {
				if bytes.HasPrefix(line, []byte("data:")) {
					data = append(data, bytes.TrimSpace(line[5:])...)
				}
			}
			unit = data
		}
		var obj map[string]any
		if json.Unmarshal(unit, &obj) != nil || !hasOutput(obj) {
			continue
		}
		last := offsets[i-1] + 1
		for k, e := range ends {
			if e >= last {
				slack := 0
				if chunked {
					slack = 2
				}
				var prev int64
				if k > 0 {
					prev = reads[k-1].t
				}
				return reads[k].t, e <= last+slack, prev, true
			}
		}
		return 0, false, 0, false
	}
}

type session struct {
	base   string
	client *http.Client
	w      *wire
	model  string
	failed bool
}

func (s *session) call(name, route, model string, stream bool, body any, out func(rec map[string]any, lines [][]byte)) {
	rec := map[string]any{"driver": "go", "call": name, "route": route, "model": model, "stream": stream, "error": nil,
		"tool_calls": []string{}}
	m := s.w.mark()
	err := func() error {
		b, _ := json.Marshal(body)
		resp, err := s.client.Post(s.base+route, "application/json", bytes.NewReader(b))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		var lines [][]byte
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			l := bytes.TrimSpace(sc.Bytes())
			if len(l) > 0 {
				lines = append(lines, append([]byte(nil), l...))
			}
		}
		if err := sc.Err(); err != nil {
			return err
		}
		out(rec, lines)
		return nil
	}()
	if err != nil {
		rec["error"] = err.Error()
		s.failed = true
	}
	evs := s.w.since(m)
	var reads []event
	for _, e := range evs {
		if e.kind == 'w' && rec["t_request_write_ns"] == nil {
			rec["t_request_write_ns"] = e.t
			rec["write_stamp"] = "tls"
			rec["local_addr"] = e.local.IP.String()
			rec["local_port"] = e.local.Port
		}
		if e.kind == 'r' {
			reads = append(reads, e)
		}
	}
	if stream {
		if t, exact, prev, ok := firstOutputRead(reads); ok {
			rec["t_first_output_read_ns"] = t
			rec["first_output_exact"] = exact
			if prev != 0 {
				rec["t_first_output_prev_read_ns"] = prev
			}
		}
	}
	j, _ := json.Marshal(rec)
	fmt.Println(string(j))
}

func native(rec map[string]any, lines [][]byte) {
	for _, l := range lines {
		var o map[string]any
		if json.Unmarshal(l, &o) != nil {
			continue
		}
		if m, ok := o["message"].(map[string]any); ok {
			if tcs, ok := m["tool_calls"].([]any); ok {
				for _, tc := range tcs {
					f, _ := tc.(map[string]any)["function"].(map[string]any)
					rec["tool_calls"] = append(rec["tool_calls"].([]string), fmt.Sprint(f["name"]))
				}
			}
		}
		if o["done"] == true {
			rec["input_tokens"] = o["prompt_eval_count"]
			rec["output_tokens"] = o["eval_count"]
			rec["finish_reason"] = o["done_reason"]
		}
		if e, ok := o["embeddings"].([]any); ok {
			rec["input_tokens"] = o["prompt_eval_count"]
			rec["embeddings"] = len(e)
		}
	}
}

func openaiStream(rec map[string]any, lines [][]byte) {
	for _, l := range lines {
		d := bytes.TrimPrefix(l, []byte("data: "))
		var o map[string]any
		if json.Unmarshal(d, &o) != nil {
			continue
		}
		if chs, ok := o["choices"].([]any); ok {
			for _, ch := range chs {
				if fr := ch.(map[string]any)["finish_reason"]; fr != nil {
					rec["finish_reason"] = fr
				}
			}
		}
		if u, ok := o["usage"].(map[string]any); ok {
			rec["input_tokens"] = u["prompt_tokens"]
			rec["output_tokens"] = u["completion_tokens"]
		}
	}
}

func clientMain(base, ca, model string, wait bool, latency, streams int, secs float64) {
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(ca)
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		fmt.Fprintln(os.Stderr, "go client: cannot read the CA", ca, err)
		os.Exit(2)
	}
	w := &wire{}
	u, _ := url.Parse(base)
	cfg := &tls.Config{RootCAs: pool, ServerName: u.Hostname(), NextProtos: []string{"http/1.1"}}
	dialer := &net.Dialer{}
	tr := &http.Transport{
		// Not a *tls.Conn to the Transport: HTTP/1.1 (as to Ollama), and stamped reads/writes.
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			raw, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			c := tls.Client(raw, cfg)
			if err := c.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, err
			}
			return &timedConn{c, w, raw.LocalAddr().(*net.TCPAddr)}, nil
		},
		MaxIdleConnsPerHost: 1 + streams,
	}
	if wait {
		bufio.NewReader(os.Stdin).ReadString('\n')
	}
	if latency > 0 {
		benchLatency(&http.Client{Transport: tr}, strings.TrimRight(base, "/"), latency)
		return
	}
	if streams > 0 {
		benchStreams(&http.Client{Transport: tr}, strings.TrimRight(base, "/"), model, streams, secs)
		return
	}
	s := &session{base: strings.TrimRight(base, "/"), client: &http.Client{Transport: tr}, w: w, model: model}
	user := func(c string) []map[string]string { return []map[string]string{{"role": "user", "content": c}} }
	s.call("chat_stream", "/api/chat", model, true, map[string]any{"model": model, "messages": user("Why is the sky blue?"), "stream": true}, native)
	s.call("chat", "/api/chat", model, false, map[string]any{"model": model, "messages": user("Say hello."), "stream": false}, native)
	s.call("generate_stream", "/api/generate", model, true, map[string]any{"model": model, "prompt": "Why is the sky blue?", "stream": true}, native)
	s.call("generate", "/api/generate", model, false, map[string]any{"model": model, "prompt": "Say hello.", "stream": false}, native)
	s.call("embed", "/api/embed", "all-minilm", false, map[string]any{"model": "all-minilm", "input": "The sky is blue because of Rayleigh scattering"}, native)
	s.call("chat_tools", "/api/chat", model, false, map[string]any{"model": model, "messages": user("What is the weather in Berlin?"), "stream": false,
		"tools": []any{map[string]any{"type": "function", "function": map[string]any{"name": "weather", "description": "Gets current weather",
			"parameters": map[string]any{"type": "object", "properties": map[string]any{"latitude": map[string]any{"type": "string"}, "longitude": map[string]any{"type": "string"}}}}}}}, native)
	s.call("openai_chat_stream", "/v1/chat/completions", model, true, map[string]any{"model": model, "messages": user("Write a haiku."), "stream": true,
		"stream_options": map[string]any{"include_usage": true}}, openaiStream)
	if s.failed {
		os.Exit(1)
	}
}

func benchLatency(client *http.Client, base string, n int) {
	call := func() time.Duration {
		t := time.Now()
		resp, err := client.Get(base + "/api/version")
		if err != nil {
			fmt.Fprintln(os.Stderr, "go bench:", err)
			os.Exit(1)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return time.Since(t)
	}
	for i := 0; i < n/10+10; i++ {
		call() // warm-up: connection, handshake, caches
	}
	d := make([]float64, n)
	var sum float64
	for i := range d {
		d[i] = float64(call().Nanoseconds()) / 1e3
		sum += d[i]
	}
	sort.Float64s(d)
	j, _ := json.Marshal(map[string]any{"calls": n, "p50_us": d[n/2], "p99_us": d[n*99/100], "mean_us": sum / float64(n)})
	fmt.Println(string(j))
}

func benchStreams(client *http.Client, base, model string, streams int, secs float64) {
	var mu sync.Mutex
	calls, chunks, errs := 0, 0, 0
	end := time.Now().Add(time.Duration(secs * float64(time.Second)))
	var wg sync.WaitGroup
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// Starts spread over a second: the streams stay staggered.
			time.Sleep(time.Duration(i) * time.Second / time.Duration(streams))
			for time.Now().Before(end) {
				b, _ := json.Marshal(map[string]any{"model": model, "stream": true,
					"messages": []map[string]string{{"role": "user", "content": "Tell me a story."}}})
				resp, err := client.Post(base+"/api/chat", "application/json", bytes.NewReader(b))
				n := 0
				if err == nil {
					sc := bufio.NewScanner(resp.Body)
					for sc.Scan() {
						n++
					}
					resp.Body.Close()
				}
				mu.Lock()
				calls++
				chunks += n
				if err != nil {
					errs++
				}
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	j, _ := json.Marshal(map[string]any{"calls": calls, "chunks": chunks, "errors": errs})
	fmt.Println(string(j))
}

func serveMain(listen, upstream, ca, cert, key string) {
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		fmt.Fprintln(os.Stderr, "go proxy:", err)
		os.Exit(2)
	}
	up, err := url.Parse(upstream)
	if err != nil {
		fmt.Fprintln(os.Stderr, "go proxy:", err)
		os.Exit(2)
	}
	proxy := httputil.NewSingleHostReverseProxy(up)
	proxy.FlushInterval = -1
	// The upstream's own Host, as proxies are set up to send (not the client's).
	direct := proxy.Director
	proxy.Director = func(r *http.Request) {
		direct(r)
		r.Host = up.Host
	}
	if ca != "" {
		pool := x509.NewCertPool()
		if pem, err := os.ReadFile(ca); err == nil {
			pool.AppendCertsFromPEM(pem)
		}
		proxy.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	ln, err := tls.Listen("tcp", listen, &tls.Config{Certificates: []tls.Certificate{pair}, NextProtos: []string{"http/1.1"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "go proxy:", err)
		os.Exit(2)
	}
	fmt.Println("listening on", ln.Addr().String())
	os.Stdout.Sync()
	srv := &http.Server{Handler: proxy}
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "go proxy:", err)
		os.Exit(1)
	}
}

func main() {
	base := flag.String("base-url", "https://127.0.0.1:11434", "the stand-in's https:// URL")
	ca := flag.String("ca", os.Getenv("STANDIN_CA"), "the CA to trust (PEM)")
	model := flag.String("model", "llama3.2", "chat model")
	wait := flag.Bool("wait", false, "read a line from stdin before the first call")
	serve := flag.String("serve", "", "proxy mode: listen here (HTTPS)")
	upstream := flag.String("upstream", "", "proxy mode: the plain-HTTP server")
	cert := flag.String("cert", "", "proxy mode: certificate (PEM)")
	key := flag.String("key", "", "proxy mode: private key (PEM)")
	latency := flag.Int("bench-latency", 0, "benchmark: this many small calls, then their latency")
	streams := flag.Int("bench-streams", 0, "benchmark: this many streams at once")
	secs := flag.Float64("secs", 10, "benchmark: how long the streams run")
	flag.Parse()
	if *serve != "" {
		serveMain(*serve, *upstream, *ca, *cert, *key)
		return
	}
	clientMain(*base, *ca, *model, *wait, *latency, *streams, *secs)
}
