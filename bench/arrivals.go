package main

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// arrivals measures the latency scenarios: it makes n changes, one a
// second (produce returns what to look for), while one poller checks every
// change not seen yet every poll (arrived), then waits up to a minute for
// the last ones. It returns the latencies in seconds, sorted, and how many
// never arrived.
func arrivals(n int, poll time.Duration, produce func(k int) (string, error), arrived func(string) bool) (lat []float64, missing int, err error) {
	type change struct {
		what       string
		made, seen time.Time
	}
	var (
		mu      sync.Mutex
		changes []*change
		wg      sync.WaitGroup
	)
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			mu.Lock()
			todo := slices.DeleteFunc(slices.Clone(changes), func(c *change) bool { return !c.seen.IsZero() })
			mu.Unlock()
			for _, c := range todo {
				if arrived(c.what) {
					mu.Lock()
					c.seen = time.Now()
					mu.Unlock()
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(poll):
			}
		}
	})
	defer wg.Wait()
	defer close(stop)

	start := time.Now()
	for k := range n {
		time.Sleep(time.Until(start.Add(time.Duration(k) * time.Second)))
		what, err := produce(k)
		if err != nil {
			return nil, 0, err
		}
		mu.Lock()
		changes = append(changes, &change{what: what, made: time.Now()})
		mu.Unlock()
	}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		mu.Lock()
		all := !slices.ContainsFunc(changes, func(c *change) bool { return c.seen.IsZero() })
		mu.Unlock()
		if all {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, c := range changes {
		if c.seen.IsZero() {
			missing++
			continue
		}
		lat = append(lat, c.seen.Sub(c.made).Seconds())
	}
	if len(lat) == 0 {
		return nil, missing, fmt.Errorf("none of %d changes arrived within a minute", n)
	}
	slices.Sort(lat)
	return lat, missing, nil
}
