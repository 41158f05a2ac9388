package httpadapter_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	httpadapter "github.com/edgebridge/gateway/adapters/http"
	"github.com/edgebridge/gateway/bridge"
)

// Start a broker and the HTTP adapter, publish a retained value with PUT
// and read it back with GET.
func ExampleNew() {
	ctx := context.Background()
	b, err := bridge.New(bridge.Config{})
	if err != nil {
		panic(err)
	}
	if err := b.Start(ctx); err != nil {
		panic(err)
	}
	defer func() { _ = b.Shutdown(ctx) }()

	s, err := httpadapter.New(httpadapter.Config{Address: "127.0.0.1:0", Generic: true}, b)
	if err != nil {
		panic(err)
	}
	if err := s.Start(ctx); err != nil {
		panic(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	}()

	base := "http://" + s.Addr()
	req, _ := http.NewRequest(http.MethodPut, base+"/topics/rooms/kitchen/temp", strings.NewReader("21.5"))
	req.Header.Set("Content-Type", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	_ = resp.Body.Close()
	fmt.Println("PUT", resp.StatusCode)

	resp, err = http.Get(base + "/topics/rooms/kitchen/temp")
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	fmt.Println("GET", resp.StatusCode, resp.Header.Get("Content-Type"), string(body))
	http.DefaultClient.CloseIdleConnections()
	// Output:
	// PUT 204
	// GET 200 text/plain 21.5
}
