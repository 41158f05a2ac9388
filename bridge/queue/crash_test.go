package queue

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	crashEnv     = "QUEUE_CRASH_DIR"
	crashBaseEnv = "QUEUE_CRASH_BASE" // first item number of the child
)

// TestHelperProcess is the child of TestCrashKill: it Puts items from
// several goroutines and prints "put N" for each Put that returned, until it
// is killed (or, as a safety net, after 60 s).
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("helper process for TestCrashKill")
	}
	s, err := OpenStore(dir, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	q, err := s.Queue("crash", Options{MaxItems: -1, MaxBytes: -1})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var (
		n  atomic.Int64
		mu sync.Mutex
	)
	base, _ := strconv.ParseInt(os.Getenv(crashBaseEnv), 10, 64)
	n.Store(base)
	payload := strings.Repeat("x", 200)
	for range 16 {
		go func() {
			for {
				i := n.Add(1)
				if err := q.Put(context.Background(), []byte(strconv.FormatInt(i, 10)+" "+payload)); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintf(os.Stdout, "put %d\n", i) // one write(2) per line, unbuffered
				mu.Unlock()
			}
		}()
	}
	time.Sleep(60 * time.Second)
	os.Exit(3)
}

// TestCrashKill runs TestHelperProcess as a child, kills it with SIGKILL
// while it is putting, and checks that every item the child saw Put return
// for is in the queue after reopening it. Three rounds on the same
// directory: each recovery must also keep what earlier rounds stored, and
// IDs must keep growing across the crashes.
func TestCrashKill(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child process")
	}
	dir := t.TempDir()
	acked := map[int64]bool{}
	for round := range 3 {
		crashChild(t, dir, int64(round)*10_000_000, acked)

		s, err := OpenStore(dir, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		q := openQueue(t, s, "crash", Options{MaxItems: -1, MaxBytes: -1})
		depth := q.Stats().Depth
		t.Logf("round %d: %d puts reported before SIGKILL in all; %d items recovered", round, len(acked), depth)
		found := map[int64]bool{}
		var last uint64
		for range depth {
			it := next(t, q)
			if it.ID <= last {
				t.Fatalf("IDs out of order: %d after %d", it.ID, last)
			}
			last = it.ID
			num, rest, ok := strings.Cut(string(it.Payload), " ")
			i, err := strconv.ParseInt(num, 10, 64)
			if !ok || err != nil || len(rest) != 200 {
				t.Fatalf("corrupt payload %q", it.Payload)
			}
			if found[i] {
				t.Fatalf("item %d stored twice", i)
			}
			found[i] = true
		}
		missing := 0
		for i := range acked {
			if !found[i] {
				missing++
			}
		}
		if missing > 0 {
			t.Fatalf("round %d: %d of %d acknowledged puts lost", round, missing, len(acked))
		}
		if err := s.Close(); err != nil { // in-flight items stay stored
			t.Fatal(err)
		}
	}
}

// crashChild starts the helper, records the items it reports as put, and
// kills it with SIGKILL after 2000 of them.
func crashChild(t *testing.T, dir string, base int64, acked map[int64]bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir, crashBaseEnv+"="+strconv.FormatInt(base, 10))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	seen, killed := 0, false
	for sc.Scan() {
		var i int64
		if _, err := fmt.Sscanf(sc.Text(), "put %d", &i); err != nil {
			continue // a line cut by the kill
		}
		acked[i] = true
		if seen++; seen == 2000 && !killed {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child ended before the kill: %v\n%s", err, stderr.String())
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want SIGKILL\n%s", err, stderr.String())
	}
}
