package upstream

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestMaxResponseBytes: an answer larger than the pool's MaxResponseBytes
// fails its call with a ResponseTooLargeError naming the limit, whatever
// its shape (a length, chunks, an event); one within it passes.
func TestMaxResponseBytes(t *testing.T) {
	const limit = 64 << 10
	shapes := map[string]func(w http.ResponseWriter, id json.RawMessage, text string){
		"content-length": func(w http.ResponseWriter, id json.RawMessage, text string) {
			body := `{"jsonrpc":"2.0","id":` + string(id) + `,"result":` + resultText(text) + `}`
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			_, _ = io.WriteString(w, body)
		},
		"chunked": func(w http.ResponseWriter, id json.RawMessage, text string) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":`+string(id)+`,"result":`)
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, resultText(text)+`}`)
		},
		"sse": writeResultEvent,
	}
	for name, write := range shapes {
		t.Run(name, func(t *testing.T) {
			f := newFakeMCP(t, 0, func(w http.ResponseWriter, _ *http.Request, id json.RawMessage, tool string) {
				text := "small"
				if tool == "big" {
					text = strings.Repeat("x", limit)
				}
				write(w, id, text)
			})
			s := fakeSession(t, f, PoolOptions{MaxResponseBytes: limit}, nil)
			ctx := ctxT(t, 30*time.Second)
			_, err := toolText(ctx, s, "big", nil)
			var big *ResponseTooLargeError
			if !errors.As(err, &big) || big.Limit != limit || !strings.Contains(err.Error(), "65536 bytes") {
				t.Fatalf("a %d-byte answer over a %d-byte limit: %v, want a ResponseTooLargeError naming the limit", limit+100, limit, err)
			}
			if got, err := toolText(ctx, s, "small", nil); err != nil || got != "small" {
				t.Fatalf("an answer within the limit: %q, %v", got, err)
			}
		})
	}
}
