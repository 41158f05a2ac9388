package queue_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/edgebridge/gateway/bridge/queue"
)

// A route's delivery loop: Put what the broker hands over, then deliver
// with Next and settle each item.
func Example() {
	q, err := queue.Open(queue.Config{
		Dir:  "", // in memory here; a storage directory in the gateway
		Name: "alerts-to-ops",
		Options: queue.Options{
			MaxItems:    1000,
			Overflow:    queue.RefuseNew,
			Backoff:     queue.Backoff{Initial: time.Second, Max: time.Minute, Multiplier: 2, Jitter: 0.2},
			MaxAttempts: 10,
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() {
		if err := q.Close(); err != nil {
			fmt.Println(err)
		}
	}()

	ctx := context.Background()
	for _, body := range []string{"fire in hall 1", "fire in hall 2"} {
		if err := q.Put(ctx, []byte(body)); err != nil { // durable once nil
			fmt.Println(err)
			return
		}
	}
	for range 2 {
		it, err := q.Next(ctx)
		if err != nil {
			fmt.Println(err)
			return
		}
		status := 204 // what the webhook answered
		switch {
		case status < 300:
			err = q.Ack(it.ID)
		case status < 500:
			err = q.Fail(it.ID)
		default:
			err = q.Retry(it.ID, fmt.Errorf("status %d", status))
		}
		if err != nil && !errors.Is(err, queue.ErrExhausted) {
			fmt.Println(err)
		}
		fmt.Printf("%d %s\n", it.ID, it.Payload)
	}
	st := q.Stats()
	fmt.Println("depth", st.Depth, "delivered", st.Delivered)
	// Output:
	// 1 fire in hall 1
	// 2 fire in hall 2
	// depth 0 delivered 2
}
