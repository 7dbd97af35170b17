package bwlimit_test

import (
	"fmt"
	"time"

	"github.com/project-flotta/flotta-device-worker/sync/bwlimit"
)

func ExampleParse() {
	s, err := bwlimit.Parse("08:00,512K 19:00,10M:1M 23:00,off")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, h := range []int{7, 8, 20, 23} {
		lim, next := s.At(time.Date(2026, 12, 2, h, 30, 0, 0, time.Local))
		fmt.Printf("%02d:30 %s until %s\n", h, lim, next.Format("15:04"))
	}
	_, err = bwlimit.Parse("08:00,fast")
	fmt.Println(err != nil)
	// Output:
	// 07:30 off until 08:00
	// 08:30 512K until 19:00
	// 20:30 10M:1M until 23:00
	// 23:30 off until 08:00
	// true
}
