package pgtest

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// TestCluster: a schema per test, and a server whose committed data
// survives an immediate restart (crash recovery from the WAL).
func TestCluster(t *testing.T) {
	c := Shared(t)
	ctx := context.Background()
	a, b := DB(t), DB(t)
	if a == b || Param(a, "search_path") == "" {
		t.Fatalf("two tests share %q", a)
	}
	conn, err := pgx.Connect(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE x (v int); INSERT INTO x VALUES (7)"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if err := c.RestartImmediate(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err = pgx.Connect(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v int
	var fsync, listen string
	if err := conn.QueryRow(ctx, "SELECT v, current_setting('fsync'), current_setting('listen_addresses') FROM x").Scan(&v, &fsync, &listen); err != nil || v != 7 || fsync != "on" || listen != "" {
		t.Fatalf("after restart: %d fsync=%s listen=%q %v", v, fsync, listen, err)
	}
	other, err := pgx.Connect(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	if _, err := other.Exec(ctx, "SELECT v FROM x"); err == nil {
		t.Fatal("a test sees another test's table")
	}
}
