package runner

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// checkRunnerUserReach fails unless the runner user can do what the job
// needs of the agent's files: search every directory down to the hooks
// (under StateDir), the socket's directory and the runner directory, and
// execute the agent binary the hooks call. Caught here, a misplaced state
// directory or agent binary is a clear error before attestation instead of
// a runner that is registered and then fails every job at its first hook.
func (c *Config) checkRunnerUserReach() error {
	if c.RunnerUID == 0 {
		return nil // root is not refused by file modes
	}
	for _, p := range []struct {
		path, what string
		leaf       fs.FileMode // permission needed on path itself, if it exists
	}{
		{c.AgentPath, "the agent binary (the job hooks execute it)", 0o1},
		{c.StateDir, "the state directory (the job hooks live in it)", 0o1},
		{filepath.Dir(c.SocketPath), "the agent socket's directory", 0o1},
		{c.RunnerDir, "the runner directory", 0o1},
	} {
		if err := reachableBy(p.path, p.leaf, c.RunnerUID, c.RunnerGID); err != nil {
			return fmt.Errorf("agent: the runner user (uid %d) cannot use %s: %w", c.RunnerUID, p.what, err)
		}
	}
	return nil
}

// reachableBy checks, with the mode bits that apply to uid/gid, that every
// existing directory above path is searchable and that path, if it exists,
// grants leaf (a mask of r=4, w=2, x=1). Directories that do not exist yet
// are the agent's to create, world-searchable. Supplementary groups are not
// considered: a grant only through one is refused (conservative).
func reachableBy(path string, leaf fs.FileMode, uid, gid int) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	need := leaf
	for p := abs; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return err
		default:
			if got := permFor(fi, uid, gid); got&need != need {
				return fmt.Errorf("%s is mode %04o, owner %s", p, fi.Mode().Perm(), owner(fi))
			}
		}
		if p == filepath.Dir(p) {
			return nil
		}
		need = 0o1 // every directory above: search
	}
}

// permFor is the rwx triple of fi's mode that applies to uid/gid.
func permFor(fi fs.FileInfo, uid, gid int) fs.FileMode {
	m := fi.Mode().Perm()
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !ok:
		return m & 0o7
	case int(st.Uid) == uid:
		return m >> 6 & 0o7
	case int(st.Gid) == gid:
		return m >> 3 & 0o7
	}
	return m & 0o7
}

func owner(fi fs.FileInfo) string {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fmt.Sprintf("%d:%d", st.Uid, st.Gid)
	}
	return "unknown"
}
