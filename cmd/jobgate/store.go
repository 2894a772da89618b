package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/attested-runner/attested-runner/internal/cli"
	"github.com/attested-runner/attested-runner/internal/fileio"
	"github.com/attested-runner/attested-runner/jobgate"
)

const storeUsage = `Usage: jobgate store migrate --from bbolt:PATH --to postgres:DSN
       jobgate store migrate --from bbolt:PATH --to postgres:@DSNFILE

Copy a gate's embedded store (stop the gate first: it holds the file) into
an empty PostgreSQL database, the store of a replicated gate: the nonce key,
used nonces, every runner and admitted key, the audit chain record for
record, and the fleet state (VMs, jobs, delivery ids, leases). The schema is
created first; the copy is one transaction; the audit chain is verified on
the source before and on the target after (same length, same head). A
target that holds any data is refused.

Give the DSN in a file (@DSNFILE, mode 0600) when it carries a password: a
command line is visible to every user of the machine.
`

func runStore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "migrate" {
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h") {
			fmt.Fprint(stdout, storeUsage)
			return nil
		}
		return cli.Usagef("store: want 'migrate'\n%s", storeUsage)
	}
	fs := cli.NewFlagSet("store migrate", storeUsage, stderr)
	from := fs.String("from", "", "source store: bbolt:PATH (a gate's dataDir/gate.db)")
	to := fs.String("to", "", "target store: postgres:DSN or postgres:@DSNFILE")
	timeout := fs.Duration("timeout", 10*time.Second, "bound on connecting and on each step but the copy itself")
	pos, err := cli.Parse(fs, args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return cli.Usagef("%v", err)
	}
	if len(pos) > 0 {
		return cli.Usagef("store migrate: unexpected argument %q", pos[0])
	}
	path, ok := strings.CutPrefix(*from, "bbolt:")
	if !ok || path == "" {
		return cli.Usagef("store migrate: --from must be bbolt:PATH")
	}
	dsn, ok := strings.CutPrefix(*to, "postgres:")
	if !ok || dsn == "" {
		return cli.Usagef("store migrate: --to must be postgres:DSN or postgres:@DSNFILE")
	}
	if file, ok := strings.CutPrefix(dsn, "@"); ok {
		b, err := fileio.ReadSecretFile(file, 16<<10)
		if err != nil {
			return err
		}
		dsn = strings.TrimSpace(string(b))
	}
	src, err := jobgate.OpenBoltStore(path)
	if err != nil {
		return fmt.Errorf("%w (is its gate still running?)", err)
	}
	defer src.Close()
	rep, err := jobgate.MigrateBoltToPostgres(ctx, src, jobgate.PostgresOptions{DSN: dsn, Timeout: *timeout})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "migrated %s to %s: nonce key, %d used nonces, %d runners, %d audit records, %d VMs, %d jobs, %d delivery ids, %d leases\n",
		path, jobgate.RedactDSN(dsn), rep.Nonces, rep.Runners, rep.AuditRecords, rep.VMs, rep.Jobs, rep.Deliveries, rep.Leases)
	fmt.Fprintf(stdout, "audit log OK on the target: %d records, head %s\n", rep.AuditRecords, rep.AuditHead)
	return nil
}
