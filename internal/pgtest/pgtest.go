// Package pgtest runs throwaway PostgreSQL clusters for tests: initdb in a
// temporary directory, the server listening only on a unix socket in that
// directory (no TCP), stopped and removed at the end.
//
// As root (a fresh CI machine), initdb and the server run as the
// `postgres` system user that Debian's postgresql package creates (or
// `nobody` without it), with the directory chowned to that user; as
// anyone else they run as the caller. The server runs with its durable
// defaults (fsync on, synchronous commit), so timings measured against it
// are honest; only initdb skips its final sync (a throwaway cluster).
//
// A test package starts one cluster, lazily, and gives every test a fresh
// database:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
//	func TestX(t *testing.T) { dsn := pgtest.DB(t); ... }
//
// Without PostgreSQL binaries, DB skips the test and says what to install
// (set PGTEST_REQUIRE=1 to fail instead).
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoBinaries: no PostgreSQL server binaries were found.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, postgres) not found: install the Debian package postgresql, or set PGTEST_BINDIR")

// Superuser is the cluster's superuser (trust authentication on the socket).
const Superuser = "postgres"

// port only names the socket file (.s.PGSQL.<port>): the server has no TCP
// listener.
const port = 5432

// BinDir finds the directory holding initdb and postgres: $PGTEST_BINDIR,
// the newest /usr/lib/postgresql/*/bin (Debian), or initdb in PATH.
func BinDir() (string, error) {
	if d := os.Getenv("PGTEST_BINDIR"); d != "" {
		if hasServer(d) {
			return d, nil
		}
		return "", fmt.Errorf("PGTEST_BINDIR=%s: %w", d, ErrNoBinaries)
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if hasServer(d) {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil && hasServer(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	return "", ErrNoBinaries
}

func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func hasServer(dir string) bool {
	for _, b := range []string{"initdb", "postgres"} {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// Cluster is one running throwaway cluster.
type Cluster struct {
	// Dir holds the socket; Dir/data is the data directory.
	Dir    string
	binDir string
	cred   *syscall.Credential // nil: run as the caller
	home   string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	admin  *pgx.Conn
	nextDB int
}

// Start creates and starts a cluster in a new temporary directory.
func Start(ctx context.Context) (*Cluster, error) {
	binDir, err := BinDir()
	if err != nil {
		return nil, err
	}
	// A short path: a unix socket path is limited to 107 bytes.
	base := os.TempDir()
	if len(base) > 40 || !searchable(base) {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "pgtest-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, binDir: binDir, home: dir}
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root.
		if c.cred, err = serverUser(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		if err := os.Chown(dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	out, err := c.command(ctx, "initdb", "-D", c.DataDir(), "-U", Superuser, "--auth=trust", "-E", "UTF8",
		"--locale=C", "--no-sync", "--no-instructions").CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w: %s", err, lastLines(string(out), 10))
	}
	conf := fmt.Sprintf(`
listen_addresses = ''
unix_socket_directories = '%s'
port = %d
max_connections = 200
shared_buffers = 32MB
fsync = on
synchronous_commit = on
logging_collector = off
log_min_messages = warning
log_statement = 'none'
`, dir, port)
	f, err := os.OpenFile(filepath.Join(c.DataDir(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString(conf)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := c.startServer(ctx); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

func searchable(dir string) bool {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

// serverUser is the unprivileged user a root caller runs the cluster as:
// postgres (Debian's postgresql package creates it), else nobody.
func serverUser() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
	}
	return nil, errors.New("running as root, and neither a postgres nor a nobody user exists to run the cluster as")
}

// command runs a PostgreSQL binary as the cluster's user, with a clean PG*
// environment.
func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, name), args...)
	env := []string{"HOME=" + c.home, "LC_ALL=C", "PATH=/usr/bin:/bin"}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "TZ=") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	cmd.Dir = c.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	return cmd
}

// DataDir is the cluster's data directory.
func (c *Cluster) DataDir() string { return filepath.Join(c.Dir, "data") }

// SocketPath is the server's unix socket.
func (c *Cluster) SocketPath() string { return filepath.Join(c.Dir, fmt.Sprintf(".s.PGSQL.%d", port)) }

// DSN is the connection string of database db as the superuser.
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", c.Dir, port, Superuser, db)
}

// startServer runs postgres in the foreground as a child that dies with
// this process (no cluster outlives a killed test binary), and waits until
// it accepts connections.
func (c *Cluster) startServer(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd != nil {
		return errors.New("pgtest: server already running")
	}
	logf, err := os.OpenFile(filepath.Join(c.Dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	// Not CommandContext: the server outlives the call.
	cmd := c.command(context.Background(), "postgres", "-D", c.DataDir())
	// Go sets the parent-death signal after the credential change, so it
	// survives it. SIGQUIT is an immediate shutdown.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	c.cmd, c.done = cmd, done
	deadline := time.Now().Add(30 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.Connect(cctx, c.DSN("postgres"))
		cancel()
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-done:
			c.cmd = nil
			return fmt.Errorf("postgres exited at start: %s", lastLines(readFile(filepath.Join(c.Dir, "server.log")), 10))
		case <-ctx.Done():
			c.stopLocked(syscall.SIGQUIT)
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.stopLocked(syscall.SIGQUIT)
			return fmt.Errorf("postgres not ready after 30s: %v: %s", err, lastLines(readFile(filepath.Join(c.Dir, "server.log")), 10))
		}
	}
}

// stopLocked signals the postmaster (SIGINT: fast shutdown, SIGQUIT:
// immediate, as pg_ctl stop -m fast|immediate) and waits for it.
func (c *Cluster) stopLocked(sig syscall.Signal) error {
	if c.cmd == nil {
		return nil
	}
	if c.admin != nil {
		c.admin.Close(context.Background())
		c.admin = nil
	}
	c.cmd.Process.Signal(sig)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
	c.cmd = nil
	return nil
}

// StopImmediate stops the server the way `pg_ctl stop -m immediate` does
// (SIGQUIT: no checkpoint, every backend dropped; the next start recovers
// from the WAL). The cluster stays on disk for StartAgain.
func (c *Cluster) StopImmediate() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopLocked(syscall.SIGQUIT)
}

// StartAgain starts a stopped server on the same data directory.
func (c *Cluster) StartAgain(ctx context.Context) error { return c.startServer(ctx) }

// RestartImmediate is `pg_ctl restart -m immediate`.
func (c *Cluster) RestartImmediate(ctx context.Context) error {
	if err := c.StopImmediate(); err != nil {
		return err
	}
	return c.StartAgain(ctx)
}

// Close stops the server (fast shutdown) and removes the directory.
func (c *Cluster) Close() error {
	c.mu.Lock()
	err := c.stopLocked(syscall.SIGINT)
	c.mu.Unlock()
	if rerr := os.RemoveAll(c.Dir); err == nil {
		err = rerr
	}
	return err
}

// Exec runs SQL in database db as the superuser, on a connection of its own.
func (c *Cluster) Exec(ctx context.Context, db, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, c.DSN(db))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// testDB is the database that holds the tests' schemas.
const testDB = "pgtest"

// CreateDB creates a fresh, empty schema and returns a DSN whose
// search_path is that schema: to what it stores, a database of its own
// (CREATE SCHEMA takes milliseconds, CREATE DATABASE a second on a busy
// disk). Advisory locks are per database, so tests in one process share
// them: they serialize, they do not break.
func (c *Cluster) CreateDB(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return "", errors.New("pgtest: server not running")
	}
	if c.admin == nil || c.admin.IsClosed() {
		conn, err := pgx.Connect(ctx, c.DSN("postgres"))
		if err != nil {
			return "", err
		}
		var exists bool
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", testDB).Scan(&exists); err != nil {
			conn.Close(ctx)
			return "", err
		}
		if !exists {
			if _, err := conn.Exec(ctx, "CREATE DATABASE "+testDB+" TEMPLATE template0"); err != nil {
				conn.Close(ctx)
				return "", err
			}
		}
		conn.Close(ctx)
		if conn, err = pgx.Connect(ctx, c.DSN(testDB)); err != nil {
			return "", err
		}
		c.admin = conn
	}
	c.nextDB++
	name := fmt.Sprintf("t%d", c.nextDB)
	if _, err := c.admin.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		return "", err
	}
	return c.DSN(testDB) + " search_path=" + name, nil
}

// TerminateBackends ends every session whose application_name is app
// (pg_terminate_backend): what a gate sees when its connections to the
// database are reset. It returns how many it ended.
func (c *Cluster) TerminateBackends(ctx context.Context, app string) (int, error) {
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = $1 AND pid <> pg_backend_pid()) t`, app).Scan(&n)
	return n, err
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// The package's shared cluster, started by the first DB or Shared call.
var (
	sharedMu  sync.Mutex
	shared    *Cluster
	sharedErr error
)

// Main runs the test binary's tests and stops the shared cluster, if one
// was started. Call it from TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		shared.Close()
		shared = nil
	}
	return code
}

// Shared returns the package's cluster, starting it on first use. It skips
// the test when the binaries are missing (fails with PGTEST_REQUIRE=1).
func Shared(t testing.TB) *Cluster {
	t.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		shared, sharedErr = Start(ctx)
		cancel()
	}
	if sharedErr != nil {
		if errors.Is(sharedErr, ErrNoBinaries) && os.Getenv("PGTEST_REQUIRE") == "" {
			t.Skipf("skipping a PostgreSQL test: %v", sharedErr)
		}
		t.Fatalf("pgtest: %v", sharedErr)
	}
	return shared
}

// DB creates a fresh database (a schema of its own: see CreateDB) in the
// shared cluster and returns its DSN.
func DB(t testing.TB) string {
	t.Helper()
	c := Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn, err := c.CreateDB(ctx)
	if err != nil {
		t.Fatalf("pgtest: creating a database: %v", err)
	}
	return dsn
}

// Param is the value of key in a DSN from this package ("" if absent).
func Param(dsn, key string) string {
	for _, f := range strings.Fields(dsn) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}
