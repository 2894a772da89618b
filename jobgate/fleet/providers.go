package fleet

import (
	"context"
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
			prov, err = NewGCE(ctx, p.Name, p.GCE)
		}
		if err != nil {
			return nil, fmt.Errorf("fleet pool %s: %w", p.Name, err)
		}
		out[p.Name] = prov
	}
	return out, nil
}
