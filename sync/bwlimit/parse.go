// Package bwlimit limits the bandwidth of the sync engine as a whole, with
// rclone's --bwlimit habits: one rate for both directions ("512K"), separate
// upload and download rates ("1M:256K"), or a timetable of such rates by
// local time of day, optionally by day of the week
// ("08:00,512K 19:00,10M 23:00,off", "Mon-08:00,1M Sat-00:00,off").
//
// A Limiter holds one token bucket per direction, shared by every transfer
// that goes through it, and follows the timetable by itself.
package bwlimit

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/project-flotta/flotta-device-worker/sync/bytesize"
)

// Setting names the worker's environment variable and the CLI flag, for
// error messages.
const Setting = "FLOTTA_BWLIMIT / --bwlimit"

// Forms lists the accepted forms, for error messages and help text.
const Forms = `a rate such as "512K" (bytes per second: a bare number is bytes, suffixes K, M, G, T are ` +
	`powers of 1024, as for every size; "off" or "0" is no limit), "UP:DOWN" such as "1M:256K", ` +
	`or a timetable of space-separated "HH:MM,RATE" or "Day-HH:MM,RATE" entries such as ` +
	`"08:00,512K 19:00,10M 23:00,off" (local time; Day is Mon..Sun)`

// Rate is a number of bytes per second; 0 means no limit.
type Rate int64

// Off is no limit.
const Off Rate = 0

// String formats r the way ParseRate reads it back ("off", "512K", "1.5M").
func (r Rate) String() string {
	if r <= 0 {
		return "off"
	}
	units := []struct {
		suffix string
		size   float64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}}
	for _, u := range units {
		if float64(r) >= u.size {
			return strconv.FormatFloat(float64(r)/u.size, 'f', -1, 64) + u.suffix
		}
	}
	return strconv.FormatInt(int64(r), 10) + "B"
}

// Limit is a pair of rates, one per direction.
type Limit struct {
	Up, Down Rate
}

// Unlimited reports whether neither direction is limited.
func (l Limit) Unlimited() bool { return l.Up <= 0 && l.Down <= 0 }

// For returns the rate of direction d.
func (l Limit) For(d Direction) Rate {
	if d == Up {
		return l.Up
	}
	return l.Down
}

// String formats l as "RATE" when both directions agree, else "UP:DOWN".
func (l Limit) String() string {
	if l.Up == l.Down {
		return l.Up.String()
	}
	return l.Up.String() + ":" + l.Down.String()
}

// Direction is the way bytes go: Up to the object store, Down from it.
type Direction int

// The two directions.
const (
	Up Direction = iota
	Down
)

// String is "up" or "down".
func (d Direction) String() string {
	if d == Up {
		return "up"
	}
	return "down"
}

// AnyDay marks a timetable entry that applies every day.
const AnyDay time.Weekday = -1

// Entry is one timetable line: from Day (or every day) at Minute past
// midnight local time, Limit is in force until the next entry.
type Entry struct {
	Day    time.Weekday // AnyDay for every day
	Minute int          // 0..1439
	Limit  Limit
}

// Schedule is a parsed --bwlimit value: a fixed limit (one entry) or a
// timetable. The zero Schedule is no limit.
type Schedule struct {
	entries []Entry // as written
	week    []point // sorted minutes of the week; AnyDay entries expanded
}

type point struct {
	minute int // 0 .. 7*1440-1, Sunday 00:00 = 0
	limit  Limit
}

const (
	minutesPerDay  = 24 * 60
	minutesPerWeek = 7 * minutesPerDay
)

// Fixed returns a schedule with one limit in force at all times.
func Fixed(l Limit) Schedule {
	return newSchedule([]Entry{{Day: AnyDay, Limit: l}})
}

// Entries returns the entries as parsed.
func (s Schedule) Entries() []Entry { return append([]Entry(nil), s.entries...) }

// IsTimetable reports whether the limit depends on the time.
func (s Schedule) IsTimetable() bool {
	if len(s.week) == 0 {
		return false
	}
	for _, p := range s.week {
		if p.limit != s.week[0].limit {
			return true
		}
	}
	return false
}

// Unlimited reports whether no entry limits anything.
func (s Schedule) Unlimited() bool {
	for _, p := range s.week {
		if !p.limit.Unlimited() {
			return false
		}
	}
	return true
}

// String formats s the way Parse reads it back.
func (s Schedule) String() string {
	if len(s.entries) == 0 {
		return "off"
	}
	if len(s.entries) == 1 && s.entries[0].Day == AnyDay && s.entries[0].Minute == 0 {
		return s.entries[0].Limit.String()
	}
	parts := make([]string, len(s.entries))
	for i, e := range s.entries {
		hm := fmt.Sprintf("%02d:%02d", e.Minute/60, e.Minute%60)
		if e.Day != AnyDay {
			hm = e.Day.String()[:3] + "-" + hm
		}
		parts[i] = hm + "," + e.Limit.String()
	}
	return strings.Join(parts, " ")
}

// At returns the limit in force at t (in t's location) and the time of the
// next change, or the zero time when the limit never changes. The entry in
// force is the last one at or before t, wrapping around midnight (or around
// the week when entries name days).
func (s Schedule) At(t time.Time) (Limit, time.Time) {
	if len(s.week) == 0 {
		return Limit{}, time.Time{}
	}
	if !s.IsTimetable() {
		return s.week[0].limit, time.Time{}
	}
	now := int(t.Weekday())*minutesPerDay + t.Hour()*60 + t.Minute()
	// i: the first point after now; the one in force is i-1, wrapping.
	i := sort.Search(len(s.week), func(i int) bool { return s.week[i].minute > now })
	cur := s.week[(i-1+len(s.week))%len(s.week)].limit
	// Next change: the next point (wrapping) whose limit differs.
	for k := 0; k < len(s.week); k++ {
		p := s.week[(i+k)%len(s.week)]
		if p.limit == cur {
			continue
		}
		ahead := p.minute - now
		if ahead <= 0 {
			ahead += minutesPerWeek
		}
		// In wall-clock terms, so that DST changes keep entries at their hour.
		end := t.Hour()*60 + t.Minute() + ahead
		next := time.Date(t.Year(), t.Month(), t.Day()+end/minutesPerDay, 0, end%minutesPerDay, 0, 0, t.Location())
		return cur, next
	}
	return cur, time.Time{}
}

func newSchedule(entries []Entry) Schedule {
	s := Schedule{entries: entries}
	for _, e := range entries {
		if e.Day == AnyDay {
			for d := 0; d < 7; d++ {
				s.week = append(s.week, point{d*minutesPerDay + e.Minute, e.Limit})
			}
		} else {
			s.week = append(s.week, point{int(e.Day)*minutesPerDay + e.Minute, e.Limit})
		}
	}
	// A day-specific entry overrides an every-day entry at the same minute
	// (stable sort keeps the later one last; dedupe keeps the last).
	sort.SliceStable(s.week, func(i, j int) bool { return s.week[i].minute < s.week[j].minute })
	out := s.week[:0]
	for _, p := range s.week {
		if n := len(out); n > 0 && out[n-1].minute == p.minute {
			out[n-1] = p
			continue
		}
		out = append(out, p)
	}
	s.week = out
	return s
}

var looksLikeTime = regexp.MustCompile(`^(Mon|Tue|Wed|Thu|Fri|Sat|Sun|mon|tue|wed|thu|fri|sat|sun)?-?[0-9]{1,2}:[0-9]{2}$`)

// Parse reads a --bwlimit value: "", "off", a rate, "UP:DOWN", or a
// timetable (see Forms). Errors name the setting (Setting) and the
// accepted forms.
func Parse(s string) (Schedule, error) { return ParseSetting(Setting, s) }

// ParseSetting is Parse with errors naming setting instead (a command that
// reads no environment names its flag alone).
func ParseSetting(setting, s string) (Schedule, error) {
	s = strings.TrimSpace(s)
	invalid := func(value string, err error) error {
		return fmt.Errorf("%s=%q: %w; accepted: %s", setting, value, err, Forms)
	}
	if s == "" {
		return Schedule{}, nil
	}
	fields := strings.Fields(s)
	if len(fields) == 1 && !strings.Contains(fields[0], ",") {
		if looksLikeTime.MatchString(fields[0]) {
			return Schedule{}, invalid(s, fmt.Errorf("%q looks like a time without a rate: a timetable entry is HH:MM,RATE (write UP:DOWN rates with units, as 10K:20K)", fields[0]))
		}
		l, err := parseLimit(fields[0])
		if err != nil {
			return Schedule{}, invalid(s, err)
		}
		return Fixed(l), nil
	}
	var entries []Entry
	seen := map[[2]int]bool{}
	for _, f := range fields {
		when, rate, ok := strings.Cut(f, ",")
		if !ok {
			return Schedule{}, invalid(s, fmt.Errorf("timetable entry %q: want TIME,RATE", f))
		}
		day, minute, err := parseWhen(when)
		if err != nil {
			return Schedule{}, invalid(s, fmt.Errorf("timetable entry %q: %w", f, err))
		}
		l, err := parseLimit(rate)
		if err != nil {
			return Schedule{}, invalid(s, fmt.Errorf("timetable entry %q: %w", f, err))
		}
		key := [2]int{int(day), minute}
		if seen[key] {
			return Schedule{}, invalid(s, fmt.Errorf("timetable entry %q: time %s given twice", f, when))
		}
		seen[key] = true
		entries = append(entries, Entry{Day: day, Minute: minute, Limit: l})
	}
	return newSchedule(entries), nil
}

var days = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// parseWhen reads "HH:MM" or "Day-HH:MM".
func parseWhen(s string) (time.Weekday, int, error) {
	day := AnyDay
	if d, hm, ok := strings.Cut(s, "-"); ok {
		wd, known := days[strings.ToLower(d)]
		if !known {
			return 0, 0, fmt.Errorf("day %q: want Mon, Tue, Wed, Thu, Fri, Sat or Sun", d)
		}
		day, s = wd, hm
	}
	h, m, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, fmt.Errorf("time %q: want HH:MM", s)
	}
	hour, err1 := strconv.Atoi(h)
	min, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || len(m) != 2 || len(h) == 0 || len(h) > 2 || hour < 0 || hour > 23 || min < 0 || min > 59 {
		return 0, 0, fmt.Errorf("time %q: want HH:MM between 00:00 and 23:59", s)
	}
	return day, hour*60 + min, nil
}

// parseLimit reads "RATE" or "UP:DOWN".
func parseLimit(s string) (Limit, error) {
	if up, down, ok := strings.Cut(s, ":"); ok {
		u, err := ParseRate(up)
		if err != nil {
			return Limit{}, fmt.Errorf("upload rate: %w", err)
		}
		d, err := ParseRate(down)
		if err != nil {
			return Limit{}, fmt.Errorf("download rate: %w", err)
		}
		return Limit{Up: u, Down: d}, nil
	}
	r, err := ParseRate(s)
	if err != nil {
		return Limit{}, err
	}
	return Limit{Up: r, Down: r}, nil
}

// ParseRate reads one rate: "off", or a size as package bytesize reads it
// (the one unit rule of every size and rate: a bare number is bytes, the
// suffixes K, M, G and T are powers of 1024), optionally followed by "/s".
// "0" is no limit.
func ParseRate(s string) (Rate, error) {
	t := strings.TrimSpace(s)
	if strings.EqualFold(t, "off") {
		return Off, nil
	}
	if t == "" {
		return 0, fmt.Errorf("empty rate")
	}
	if len(t) > 2 && strings.EqualFold(t[len(t)-2:], "/s") {
		t = t[:len(t)-2]
	}
	if strings.HasPrefix(t, "-") {
		return 0, fmt.Errorf("rate %q: negative", s)
	}
	n, err := bytesize.Parse(t)
	if err != nil {
		return 0, fmt.Errorf("rate %q: %v", s, err)
	}
	if n > math.MaxInt64/2 {
		return 0, fmt.Errorf("rate %q: too large", s)
	}
	return Rate(n), nil
}
