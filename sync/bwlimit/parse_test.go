package bwlimit

import (
	"strings"
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	good := map[string]Rate{
		"off": Off, "OFF": Off, "0": Off, "0K": Off,
		"512K": 512 << 10, "512k": 512 << 10, "512KiB": 512 << 10, "512KB": 512 << 10, "512Ki": 512 << 10,
		"1M": 1 << 20, "1.5M": 3 << 19, "10M": 10 << 20, "2G": 2 << 30, "1T": 1 << 40,
		"100":  100, // bare number: bytes/s, as every size (package bytesize)
		"100B": 100, "100b": 100, "1K/s": 1 << 10,
	}
	for in, want := range good {
		got, err := ParseRate(in)
		if err != nil || got != want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "K", "-1M", "12X", "1MM", "1.2.3K", "0.5B", "abc", "1e400K", "NaN"} {
		if got, err := ParseRate(in); err == nil {
			t.Errorf("ParseRate(%q) = %d, want an error", in, got)
		}
	}
}

func TestRateStringRoundTrips(t *testing.T) {
	for _, r := range []Rate{Off, 1, 1000, 1 << 10, 3 << 19, 512 << 10, 10 << 20, 2 << 30, 5 << 40} {
		back, err := ParseRate(r.String())
		if err != nil || back != r {
			t.Errorf("%d -> %q -> %d, %v", r, r.String(), back, err)
		}
	}
}

func TestParseFixed(t *testing.T) {
	for in, want := range map[string]Limit{
		"":          {},
		"off":       {},
		" 512K ":    {Up: 512 << 10, Down: 512 << 10},
		"1M:256K":   {Up: 1 << 20, Down: 256 << 10},
		"off:256K":  {Up: Off, Down: 256 << 10},
		"10M:off":   {Up: 10 << 20},
		"2048:1.5K": {Up: 2048, Down: 1536}, // a bare number is bytes
	} {
		s, err := Parse(in)
		if err != nil {
			t.Errorf("Parse(%q): %v", in, err)
			continue
		}
		if s.IsTimetable() {
			t.Errorf("Parse(%q) is a timetable", in)
		}
		got, next := s.At(time.Now())
		if got != want || !next.IsZero() {
			t.Errorf("Parse(%q).At = %+v, %v; want %+v and no change", in, got, next, want)
		}
		if want.Unlimited() != s.Unlimited() {
			t.Errorf("Parse(%q).Unlimited() = %v", in, s.Unlimited())
		}
	}
}

func TestParseErrorsNameTheSettingAndForms(t *testing.T) {
	for _, in := range []string{
		"fast", "1M:", ":1M", "1M:2M:3M", "08:00", "08:00,", "8h,1M", "24:00,1M", "08:60,1M",
		"08:00,1M 08:00,2M", "Xyz-08:00,1M", "08:00,1M 1M", "Mon-8:0,1M", "08:00,1M,2M",
	} {
		_, err := Parse(in)
		if err == nil {
			t.Errorf("Parse(%q): no error", in)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, "FLOTTA_BWLIMIT") || !strings.Contains(msg, "--bwlimit") || !strings.Contains(msg, "UP:DOWN") || !strings.Contains(msg, "HH:MM,RATE") {
			t.Errorf("Parse(%q): error does not name the setting and the accepted forms: %v", in, err)
		}
	}
}

// at is a local time on Wednesday 2026-12-02 (plus days).
func at(day, hour, min int) time.Time {
	return time.Date(2026, 12, 2+day, hour, min, 0, 0, time.Local)
}

func TestTimetableDaily(t *testing.T) {
	s, err := Parse("08:00,512K 19:00,10M 23:00,off")
	if err != nil {
		t.Fatal(err)
	}
	if !s.IsTimetable() || s.Unlimited() {
		t.Fatalf("IsTimetable %v Unlimited %v", s.IsTimetable(), s.Unlimited())
	}
	k512 := Limit{512 << 10, 512 << 10}
	m10 := Limit{10 << 20, 10 << 20}
	cases := []struct {
		now      time.Time
		want     Limit
		wantNext time.Time
	}{
		{at(0, 0, 0), Limit{}, at(0, 8, 0)},   // wraps: 23:00 of the day before is in force
		{at(0, 7, 59), Limit{}, at(0, 8, 0)},  // just before
		{at(0, 8, 0), k512, at(0, 19, 0)},     // exactly at a boundary: that entry
		{at(0, 12, 30), k512, at(0, 19, 0)},   // between
		{at(0, 19, 0), m10, at(0, 23, 0)},     //
		{at(0, 23, 0), Limit{}, at(1, 8, 0)},  // last entry, next change tomorrow
		{at(0, 23, 59), Limit{}, at(1, 8, 0)}, //
		{at(1, 8, 30), k512, at(1, 19, 0)},    // next day the same
		{at(0, 12, 30).Add(45 * time.Second), k512, at(0, 19, 0)},
	}
	for _, c := range cases {
		got, next := s.At(c.now)
		if got != c.want || !next.Equal(c.wantNext) {
			t.Errorf("At(%s) = %v, %s; want %v, %s", c.now.Format("Mon 15:04:05"), got, next.Format("Mon 15:04"), c.want, c.wantNext.Format("Mon 15:04"))
		}
	}
	if got := s.String(); got != "08:00,512K 19:00,10M 23:00,off" {
		t.Errorf("String() = %q", got)
	}
}

func TestTimetableOrderAndUpDown(t *testing.T) {
	// Entries out of order and with UP:DOWN rates.
	s, err := Parse("18:00,off 06:30,1M:256K")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.At(at(0, 5, 0)); got != (Limit{}) {
		t.Errorf("05:00: %v", got)
	}
	if got, next := s.At(at(0, 6, 30)); got != (Limit{1 << 20, 256 << 10}) || !next.Equal(at(0, 18, 0)) {
		t.Errorf("06:30: %v %v", got, next)
	}
	// One entry only: in force all the time, never changes.
	one, err := Parse("12:00,1M")
	if err != nil {
		t.Fatal(err)
	}
	if got, next := one.At(at(0, 3, 0)); got.Up != 1<<20 || !next.IsZero() {
		t.Errorf("single entry: %v %v", got, next)
	}
}

func TestTimetableWeekdays(t *testing.T) {
	// 2026-12-02 is a Wednesday. Weekdays limited from 08:00, weekend free.
	s, err := Parse("Mon-08:00,1M Fri-18:00,off 12:00,2M")
	if err != nil {
		t.Fatal(err)
	}
	if at(0, 0, 0).Weekday() != time.Wednesday {
		t.Fatal("calendar assumption")
	}
	m1 := Limit{1 << 20, 1 << 20}
	m2 := Limit{2 << 20, 2 << 20}
	cases := []struct {
		now      time.Time
		want     Limit
		wantNext time.Time
	}{
		{at(0, 11, 0), m2, at(1, 12, 0)}, // Wed 11:00: Tue's 12:00 entry; Wed 12:00 is also 2M, so next change... see below
		{at(2, 17, 0), m2, at(2, 18, 0)}, // Fri 17:00
		{at(2, 18, 0), Limit{}, at(3, 12, 0)},
		{at(3, 12, 0), m2, at(5, 8, 0)}, // Sat 12:00 -> Mon 08:00 (Sun 12:00 same 2M)
		{at(5, 8, 0), m1, at(5, 12, 0)}, // Mon 08:00
	}
	// Wed 11:00: in force is Tue 12:00 (2M); the points ahead are Wed 12:00 (2M),
	// Thu 12:00 (2M), Fri 12:00 (2M), Fri 18:00 (off): next change Fri 18:00.
	cases[0].wantNext = at(2, 18, 0)
	for _, c := range cases {
		got, next := s.At(c.now)
		if got != c.want || !next.Equal(c.wantNext) {
			t.Errorf("At(%s) = %v, %s; want %v, %s", c.now.Format("Mon 15:04"), got, next.Format("Mon 15:04"), c.want, c.wantNext.Format("Mon 15:04"))
		}
	}
	if got := s.String(); got != "Mon-08:00,1M Fri-18:00,off 12:00,2M" {
		t.Errorf("String() = %q", got)
	}
	// A day-specific entry overrides the daily one at the same minute.
	o, err := Parse("08:00,1M Sun-08:00,off")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := o.At(at(4, 9, 0)); got != (Limit{}) { // Sunday
		t.Errorf("Sunday 09:00: %v", got)
	}
	if got, _ := o.At(at(5, 9, 0)); got != m1 { // Monday
		t.Errorf("Monday 09:00: %v", got)
	}
}

func TestTimetableAcrossDST(t *testing.T) {
	loc, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Skip("no tzdata:", err)
	}
	s, err := Parse("01:00,1M 04:00,off")
	if err != nil {
		t.Fatal(err)
	}
	// 2026-03-29 02:00 -> 03:00 in Paris. From 00:30 the next change is 01:00,
	// from 01:30 it is 04:00 wall clock (2 h of real time).
	_, next := s.At(time.Date(2026, 3, 29, 1, 30, 0, 0, loc))
	if next.Hour() != 4 || next.Minute() != 0 {
		t.Errorf("next change across DST at %s, want 04:00", next)
	}
}
