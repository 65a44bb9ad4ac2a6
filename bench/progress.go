package bench

import (
	"fmt"
	"io"
	"time"
)

// Progress prints the state of a long run: on one updating line when the
// output is a terminal, as plain lines every Every otherwise.
type Progress struct {
	W     io.Writer
	TTY   bool
	Total time.Duration // expected run time; 0 when unknown
	Every time.Duration // plain-line interval (default 5 s)

	start    time.Time
	last     time.Time
	lastMsgs int64
	lastAt   time.Time
	wrote    bool
}

// NewProgress starts a progress line for a run of about total.
func NewProgress(w io.Writer, tty bool, total time.Duration) *Progress {
	now := time.Now()
	return &Progress{W: w, TTY: tty, Total: total, Every: 5 * time.Second, start: now, lastAt: now}
}

// Update reports connected clients, the cumulative message count (the rate
// is derived from it) and errors.
func (p *Progress) Update(connected, msgs, errs int64) {
	if p == nil || p.W == nil {
		return
	}
	now := time.Now()
	rate := 0.0
	if dt := now.Sub(p.lastAt).Seconds(); dt > 0 {
		rate = float64(msgs-p.lastMsgs) / dt
	}
	p.lastMsgs, p.lastAt = msgs, now
	line := p.format(now.Sub(p.start), connected, rate, errs)
	if p.TTY {
		fmt.Fprintf(p.W, "\r%s\033[K", line)
		p.wrote = true
		return
	}
	if p.last.IsZero() || now.Sub(p.last) >= p.Every {
		fmt.Fprintln(p.W, line)
		p.last = now
	}
}

func (p *Progress) format(elapsed time.Duration, connected int64, rate float64, errs int64) string {
	el := elapsed.Round(time.Second)
	s := fmt.Sprintf("elapsed %v", el)
	if p.Total > 0 {
		s += fmt.Sprintf(" remaining %v", max(p.Total-elapsed, 0).Round(time.Second))
	}
	return s + fmt.Sprintf("  connected %d  msgs/s %.0f  errors %d", connected, rate, errs)
}

// Done ends the updating line.
func (p *Progress) Done() {
	if p != nil && p.TTY && p.wrote {
		fmt.Fprintln(p.W)
	}
}
