package fleet

import (
	"context"
	"errors"
	"fmt"
)

// NewProviders builds each pool's provider from its configuration.
func NewProviders(ctx context.Context, c *Config) (map[string]Provider, error) {
	out := map[string]Provider{}
	for i := range c.Pools {
		p := &c.Pools[i]
		var prov Provider
		var err error
		switch {
		case p.QEMU != nil:
			prov, err = NewQEMU(ctx, p.Name, p.QEMU)
		case p.GCE != nil:
			err = errors.New("the gce provider is not built into this gate")
		}
		if err != nil {
			return nil, fmt.Errorf("fleet pool %s: %w", p.Name, err)
		}
		out[p.Name] = prov
	}
	return out, nil
}
