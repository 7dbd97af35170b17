package datasync

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/project-flotta/flotta-device-worker/sync/s3client"
	"github.com/project-flotta/flotta-device-worker/sync/s3wire"
)

// Push-based ingress. Where the server offers bucket notifications (MinIO),
// one stream per bucket that ingress mappings read announces objects created
// or removed under their prefixes, and each is applied at once through
// Changed (a HEAD, then the download or the pruned row: the same decision as
// a full pass). While the stream is up the mapping's full pass is only the
// safety net (every WatchedInterval, as for a watched egress mapping);
// when it drops the mapping polls again (adaptive, poll.go), and when it
// comes back a full pass catches up with what was missed. A server without
// notifications (versitygw, AWS, Ceph RGW) answers at once and is polled.

// maxEventBatch is how many announced keys of one mapping are applied one by
// one (a HEAD each); past it a full pass (a LIST per 1,000) is cheaper.
const maxEventBatch = 1000

// listenMinBackoff and listenMaxBackoff space attempts to open a stream the
// server could not be reached for (an answer that it has no notifications
// ends the attempts until the next Configure).
const (
	listenMinBackoff       = time.Second
	listenMaxBackoff       = 5 * time.Minute
	listenSilentMaxBackoff = 2 * time.Hour
)

// listenSpec is what one bucket's stream serves.
type listenSpec struct {
	ep     Endpoint
	bucket string
	maps   []listenMapping // by id
}

type listenMapping struct {
	id string
	lp string // keys.ListPrefix of its prefix
}

func (a *listenSpec) equal(b *listenSpec) bool {
	return a.bucket == b.bucket && sameEndpoint(&a.ep, &b.ep) && slices.Equal(a.maps, b.maps)
}

func (a *listenSpec) ids() []string {
	out := make([]string, len(a.maps))
	for i, m := range a.maps {
		out[i] = m.id
	}
	return out
}

// listenSpecs is what streams the current configuration needs, by bucket.
func (e *Engine) listenSpecs() map[string]*listenSpec {
	e.mu.Lock()
	ep := e.ep
	list := e.list()
	e.mu.Unlock()
	out := map[string]*listenSpec{}
	if ep == nil {
		return out
	}
	for _, mp := range list {
		m := mp.config()
		if m.Direction != Ingress {
			continue
		}
		s := out[m.Bucket]
		if s == nil {
			s = &listenSpec{ep: *ep, bucket: m.Bucket}
			out[m.Bucket] = s
		}
		lp := m.Prefix
		if lp != "" {
			lp += "/"
		}
		s.maps = append(s.maps, listenMapping{id: m.ID, lp: lp})
	}
	for _, s := range out {
		slices.SortFunc(s.maps, func(a, b listenMapping) int { return strings.Compare(a.id, b.id) })
	}
	return out
}

// reconfigure tells listenLoop that the mappings or the endpoint changed.
func (e *Engine) reconfigure() {
	select {
	case e.reconfigured <- struct{}{}:
	default: // already pending
	}
}

// listenLoop keeps one stream per bucket with ingress mappings, following
// Configure, until ctx ends.
func (e *Engine) listenLoop(ctx context.Context) {
	type running struct {
		spec   *listenSpec
		cancel context.CancelFunc
		done   chan struct{}
	}
	streams := map[string]*running{}
	stop := func(r *running) {
		r.cancel()
		<-r.done
		for _, id := range r.spec.ids() {
			e.setNotified(id, false)
		}
	}
	noted := &sync.Map{} // endpoint+bucket found without notifications: logged once
	for {
		want := e.listenSpecs()
		for b, r := range streams {
			if w := want[b]; w == nil || !w.equal(r.spec) {
				stop(r)
				delete(streams, b)
			}
		}
		for b, spec := range want {
			if streams[b] != nil {
				continue
			}
			cctx, cancel := context.WithCancel(ctx)
			r := &running{spec: spec, cancel: cancel, done: make(chan struct{})}
			streams[b] = r
			go func() {
				defer close(r.done)
				e.listenBucket(cctx, spec, noted)
			}()
		}
		select {
		case <-ctx.Done():
			for _, r := range streams {
				stop(r)
			}
			return
		case <-e.reconfigured:
		}
	}
}

// listenBucket opens the stream of one bucket and applies its events until
// ctx ends or the server turns out not to offer notifications.
func (e *Engine) listenBucket(ctx context.Context, spec *listenSpec, noted *sync.Map) {
	cfg := s3wire.ListenConfig{
		S3: s3client.Config{
			Host: spec.ep.Host, Port: spec.ep.Port, Secure: spec.ep.Secure, Region: spec.ep.Region,
			AccessKey: spec.ep.AccessKey, SecretKey: spec.ep.SecretKey, CAPEM: spec.ep.CAPEM,
			Transport: e.opts.Transport, Wrap: e.opts.WrapTransport, Conns: 1,
		},
		Bucket:  spec.bucket,
		Removed: true,
		Log:     e.log.Named("notify"),
	}
	for _, m := range spec.maps {
		cfg.Prefixes = append(cfg.Prefixes, m.lp)
	}
	if e.hooks.notifyTune != nil {
		e.hooks.notifyTune(&cfg)
	}
	log := e.log.With(zap.String("bucket", spec.bucket), zap.Strings("mappings", spec.ids()))
	backoff := listenMinBackoff
	for {
		l, err := s3wire.Listen(ctx, cfg)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, s3wire.ErrUnsupported):
			e.setMode(spec.ids(), false, ReasonUnsupported)
			key := spec.ep.String() + "\x00" + spec.bucket
			if _, seen := noted.LoadOrStore(key, true); !seen {
				log.Info("the server offers no bucket notifications: ingress polls (adaptive interval)", zap.Error(err))
			}
			return
		case err != nil:
			reason := streamReason(err)
			e.setMode(spec.ids(), false, reason)
			log.Debug("bucket notifications unavailable for now; polling", zap.Error(err), zap.Duration("retry_in", backoff))
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			ceiling := listenMaxBackoff
			if reason == ReasonStreamSilent {
				// A server that answers nothing holds its stream back: each
				// attempt costs a request, so an idle mapping tries a few
				// times a day instead of 288.
				ceiling = listenSilentMaxBackoff
			}
			backoff = min(2*backoff, ceiling)
			continue
		}
		log.Info("notification stream open: ingress downloads new objects as they are announced once its pings come on time")
		if e.applyEvents(ctx, l, spec) {
			backoff = listenMinBackoff
		}
		if errors.Is(l.Err(), s3wire.ErrUnsupported) {
			e.setMode(spec.ids(), false, ReasonUnsupported)
			log.Info("the server no longer offers bucket notifications: ingress polls", zap.Error(l.Err()))
			return
		}
		if ctx.Err() != nil {
			return
		}
		// The listener gave up on a server that answered nothing: wait as
		// after a failed Listen (backoff kept unless the stream was timely).
		e.setMode(spec.ids(), false, streamReason(l.Err()))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, listenSilentMaxBackoff)
	}
}

// applyEvents hands the listener's events to one applier per mapping until
// the listener stops, and follows its connection: a mapping is notified
// (its full pass only a safety net) while the stream is up; a full pass
// follows every (re)connection, as events may have been missed.
func (e *Engine) applyEvents(ctx context.Context, l *s3wire.Listener, spec *listenSpec) (wasTimely bool) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	appliers := make([]*applier, len(spec.maps))
	for i, m := range spec.maps {
		a := &applier{id: m.id, wake: make(chan struct{}, 1)}
		appliers[i] = a
		wg.Go(func() { e.runApplier(ctx, a) })
	}
	// The mappings are notified (their passes only a safety net) while the
	// stream is timely: up, and its pings arrive on schedule. A stream that
	// is up but not timely may hold its events back: events from it are
	// applied, and the mappings keep polling.
	healthy := false
	follow := func() {
		now := l.Timely()
		wasTimely = wasTimely || now
		if now != healthy {
			healthy = now
			for _, m := range spec.maps {
				e.setNotified(m.id, healthy)
			}
		}
		reason := ReasonStreamDown
		if l.Connected() {
			reason = ReasonStreamSilent
		}
		e.setMode(spec.ids(), healthy, reason)
	}
	e.passSoon(spec.ids()) // events may have been missed before the stream was up
	follow()
	defer func() {
		for _, m := range spec.maps {
			e.setNotified(m.id, false)
		}
		if ctx.Err() == nil {
			e.setMode(spec.ids(), false, ReasonStreamDown)
		}
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case ev, ok := <-l.Events():
			if !ok {
				return
			}
			if ev.Kind == s3wire.Resync {
				e.log.Info("bucket notifications may have been missed: full pass", zap.String("bucket", spec.bucket))
				e.passSoon(spec.ids())
				continue
			}
			for i, m := range spec.maps {
				if strings.HasPrefix(ev.Key, m.lp) && len(ev.Key) > len(m.lp) {
					appliers[i].add(ev.Key[len(m.lp):])
				}
			}
		case <-tick.C:
			// The stream reconnects by itself; while it is down the
			// mappings poll (the Resync after it is back catches up).
			follow()
		}
	}
}

// applier applies the announced keys of one mapping, a batch at a time:
// keys announced while Changed runs are taken together next.
type applier struct {
	id   string
	wake chan struct{}
	mu   sync.Mutex
	rels []string
	over bool // more than maxEventBatch pending: a full pass instead
}

func (a *applier) add(rel string) {
	a.mu.Lock()
	if len(a.rels) < maxEventBatch {
		a.rels = append(a.rels, rel)
	} else {
		a.over = true
	}
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (e *Engine) runApplier(ctx context.Context, a *applier) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.wake:
		}
		a.mu.Lock()
		rels, over := a.rels, a.over
		a.rels, a.over = nil, false
		a.mu.Unlock()
		if over {
			e.passSoon([]string{a.id})
			continue
		}
		if err := e.Changed(ctx, a.id, rels); err != nil && ctx.Err() == nil {
			// Retried by a full pass, owed at once.
			e.log.Debug("announced objects not all applied; a full pass follows", zap.String("mapping", a.id), zap.Error(err))
			e.pollBase(a.id)
		}
	}
}

// setNotified says whether a healthy stream announces a mapping's objects:
// its full pass is then a safety net every WatchedInterval; when the stream
// stops, the mapping polls from its base interval.
func (e *Engine) setNotified(id string, healthy bool) {
	e.tell(id, msgWatched{healthy: healthy, stream: true})
}

// passSoon asks for a full pass of the mappings at once (after the pass in
// flight, if any), as for a new mapping.
func (e *Engine) passSoon(ids []string) {
	for _, id := range ids {
		e.tell(id, msgPassSoon{})
	}
}

// pollBase brings a mapping back to its base schedule with a full pass at
// once: its notifications stopped, or one could not be applied.
func (e *Engine) pollBase(id string) { e.tell(id, msgPollBase{}) }

// lookupObject fills it.remote with the object of an ingress item as the
// server has it now (a HEAD); nil when there is none.
func (p *pass) lookupObject(ctx context.Context, it *item) error {
	key := p.lp + it.name
	o, err := p.be.Stat(ctx, p.m.Bucket, key)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("ingress %s: stat %s/%s: %w", p.m.ID, p.m.Bucket, key, err)
	}
	o.Key = key
	it.remote = &o
	return nil
}
