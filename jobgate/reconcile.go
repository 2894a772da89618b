package jobgate

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// ReconcileReport says what one reconcile pass did.
type ReconcileReport struct {
	// Removed: runners deleted from GitHub (unknown, unclaimed past TTL,
	// offline, or already deregistered).
	Removed int
	// Gone: live records whose runner GitHub no longer lists (an ephemeral
	// runner is deleted by GitHub after its job).
	Gone int
	// Released: stale pending reservations dropped.
	Released int
}

// RecordContext is the context to record an action already taken outside
// the gate (a runner removed on GitHub, a VM destroyed at its provider):
// it outlives the cancellation of ctx (a shutdown), for at most 10 s, so
// no such action goes unrecorded.
func RecordContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}

// Reconcile lists the scope's runners with the gate's prefix and removes
// those no live environment stands behind: unknown to the gate (e.g. the
// gate crashed after minting), deregistered but still listed, never claimed
// a job within the TTL, or offline (and idle) for longer than the offline
// grace since reconcile first saw it offline (VM crashed or was killed). No
// zombie runners. It also marks records whose runner GitHub no longer lists,
// and releases stale pending reservations.
func (g *Gate) Reconcile(ctx context.Context) (ReconcileReport, error) {
	var rep ReconcileReport
	start := g.now()
	gh, err := g.registry.List(ctx)
	if err != nil {
		return rep, err
	}
	recs, err := g.store.Runners(ctx)
	if err != nil {
		return rep, err
	}
	byName := map[string]*Runner{}
	for i := range recs {
		byName[recs[i].Name] = &recs[i]
	}
	listed := map[string]bool{}
	var errs []string
	for _, r := range gh {
		if !strings.HasPrefix(r.Name, g.namePrefix) {
			continue
		}
		listed[r.Name] = true
		if r.Status != "offline" {
			g.markOnline(r.Name)
		}
		rec := byName[r.Name]
		age := time.Duration(0)
		if rec != nil {
			age = start.Sub(rec.AdmittedAt)
		}
		reason := ""
		switch {
		case rec == nil:
			reason = "unknown to the gate"
		case rec.State == StateDeregistered || rec.State == StateRemoved:
			reason = "already " + string(rec.State)
		case rec.State == StatePending:
			if start.Sub(rec.UpdatedAt) > g.pendingTTL {
				reason = "admission never completed"
			}
		case r.Busy:
			// Running its job: leave it.
		case r.Status == "offline" && g.offlineFor(r.Name, start) > g.offlineGrace:
			reason = "offline: its VM is gone"
		case age > g.unclaimedTTL:
			reason = fmt.Sprintf("unclaimed for %s", age.Round(time.Second))
		}
		if reason == "" {
			continue
		}
		if ctx.Err() != nil {
			// Shutting down: take no new action on GitHub.
			break
		}
		if err := g.registry.Remove(ctx, r.ID); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", r.Name, err))
			continue
		}
		rep.Removed++
		// The runner is gone from GitHub: its record and audit entry are
		// written even if shutdown cancels ctx now, so no removal goes
		// unrecorded.
		wctx, cancel := RecordContext(ctx)
		audit := &AuditRecord{Time: g.now().UTC(), Action: "reconcile", Result: "removed", RunnerName: r.Name, RunnerID: r.ID, Detail: reason}
		if rec != nil {
			audit.KeyDigest = rec.KeyDigest
		}
		var werr error
		switch {
		case rec != nil && rec.State == StatePending:
			if werr = g.store.Release(wctx, rec.KeyDigest, audit); werr == nil {
				rep.Released++
			}
		case rec != nil && rec.State == StateLive:
			werr = g.store.SetState(wctx, rec.Name, StateRemoved, g.now(), audit)
		default:
			werr = g.store.Audit(wctx, audit)
		}
		cancel()
		if werr != nil {
			errs = append(errs, fmt.Sprintf("%s: removed from GitHub, but recording it failed: %v", r.Name, werr))
		}
		g.log.Info("reconcile removed runner", "runner", r.Name, "runner_id", r.ID, "reason", reason)
	}
	for _, rec := range recs {
		if listed[rec.Name] || !rec.AdmittedAt.Before(start) {
			continue
		}
		switch rec.State {
		case StateLive:
			// GitHub deletes an ephemeral runner after its job: done.
			g.store.SetState(ctx, rec.Name, StateRemoved, g.now(), &AuditRecord{Time: g.now().UTC(), Action: "reconcile",
				Result: "gone", RunnerName: rec.Name, RunnerID: rec.ID, KeyDigest: rec.KeyDigest, Detail: "no longer listed by GitHub"})
			rep.Gone++
		case StatePending:
			if start.Sub(rec.UpdatedAt) > g.pendingTTL {
				if err := g.store.Release(ctx, rec.KeyDigest, &AuditRecord{Time: g.now().UTC(), Action: "reconcile", Result: "released",
					RunnerName: rec.Name, KeyDigest: rec.KeyDigest, Detail: "admission never completed"}); err == nil {
					rep.Released++
				}
			}
		}
	}
	g.forgetOffline(listed)
	if len(errs) > 0 {
		return rep, fmt.Errorf("removing runners: %s", strings.Join(errs, "; "))
	}
	return rep, nil
}

// offlineFor is how long a runner has been seen offline, counting from the
// first reconcile pass that saw it so.
func (g *Gate) offlineFor(name string, now time.Time) time.Duration {
	g.offlineMu.Lock()
	defer g.offlineMu.Unlock()
	first, ok := g.offlineSince[name]
	if !ok {
		g.offlineSince[name] = now
		return 0
	}
	return now.Sub(first)
}

func (g *Gate) markOnline(name string) {
	g.offlineMu.Lock()
	delete(g.offlineSince, name)
	g.offlineMu.Unlock()
}

// forgetOffline drops the offline clocks of runners no longer listed.
func (g *Gate) forgetOffline(listed map[string]bool) {
	g.offlineMu.Lock()
	defer g.offlineMu.Unlock()
	for name := range g.offlineSince {
		if !listed[name] {
			delete(g.offlineSince, name)
		}
	}
}
