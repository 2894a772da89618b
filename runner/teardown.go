package runner

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
)

// teardown runs once, whatever ended the agent's life: stop the runner (no
// job continues), extend teardown, sign the deregistration with the
// environment key, destroy the keys, deregister at the gate (retrying within
// TeardownDeadline; if the gate stays down, its reconcile loop removes the
// runner), power off. Each step runs even if an earlier one failed.
func (a *Agent) teardown(ctx context.Context, out *Outcome) {
	c := a.cfg
	log := a.log.With("reason", out.Reason)
	if out.Err != nil {
		log = log.With("err", out.Err)
	}
	log.Info("teardown")
	a.listener.stop(15 * time.Second)

	if err := c.Collector.Extend(attest.TeardownEvent(out.Reason)); err != nil {
		log.Warn("extending teardown", "err", err)
	}
	a.mu.Lock()
	name := a.refusedRunner
	if a.admission != nil {
		name = a.admission.RunnerName
	}
	a.mu.Unlock()
	var dereg *gateapi.DeregisterRequest
	if name != "" {
		signedAt := c.Now().UTC()
		reason := out.Reason
		if len(reason) > 200 {
			reason = reason[:200]
		}
		digest := sha256.Sum256(gateapi.DeregisterMessage(name, out.RunnerOutcome, reason, signedAt))
		sig, err := c.Collector.Signer().Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil {
			log.Warn("signing the deregistration", "err", err)
		} else {
			dereg = &gateapi.DeregisterRequest{RunnerName: name, Outcome: out.RunnerOutcome, Reason: reason, SignedAt: signedAt, Signature: sig}
		}
	}
	if err := c.Collector.Close(); err != nil {
		log.Warn("destroying the environment keys", "err", err)
	} else {
		log.Info("environment keys destroyed")
	}

	if dereg != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.TeardownDeadline)
		err := gateapi.Retry(dctx, 1<<20, 250*time.Millisecond, 10*time.Second, func(int) error {
			resp, err := c.Gate.Deregister(dctx, dereg)
			if err == nil {
				log.Info("deregistered", "runner", dereg.RunnerName, "detail", resp.Detail)
			}
			return err
		})
		cancel()
		if err != nil {
			var rej *gateapi.RejectedError
			if errors.As(err, &rej) {
				log.Error("gate refused deregistration", "err", err)
			} else {
				log.Error("could not deregister within the deadline; the gate's reconcile loop will remove the runner", "err", err)
			}
		} else {
			out.Deregistered = true
		}
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := c.PowerOff(pctx); err != nil {
		log.Error("power off failed", "err", err)
	}
}
