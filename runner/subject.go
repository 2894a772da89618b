package runner

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Subject errors: what the agent refuses in a descriptor the job hands it.
var (
	ErrSubjectNotRegular = errors.New("subject is not a regular file")
	ErrSubjectUnreadable = errors.New("subject was not opened for reading")
	ErrSubjectTooLarge   = errors.New("subject is over the size limit")
	ErrSubjectChanged    = errors.New("subject changed while it was hashed")
	ErrSubjectName       = errors.New("invalid subject name")
)

// DefaultMaxSubjectSize bounds one attested file.
const DefaultMaxSubjectSize = 64 << 30

// testHookAfterFirstRead, when set by a test, runs after hashSubject's first
// read: a job changing the file while the agent hashes it.
var testHookAfterFirstRead func()

// maxSubjectName bounds a subject name.
const maxSubjectName = 1024

// hashSubject returns the SHA-256 and size of the regular file behind fd, a
// descriptor the job opened and handed over. It acts only on the descriptor:
// no path is resolved, nothing is opened. It refuses anything but a regular
// file open for reading (a FIFO or a device could block or never end), a
// file over maxSize, and a file that changed while it was hashed (size,
// modification or change time), and gives up
// when ctx ends. Reads are positional (pread): the descriptor's offset is
// shared with the job, which may move it.
func hashSubject(ctx context.Context, fd int, maxSize int64) ([]byte, int64, error) {
	var before unix.Stat_t
	if err := unix.Fstat(fd, &before); err != nil {
		return nil, 0, fmt.Errorf("fstat: %w", err)
	}
	if before.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, 0, fmt.Errorf("%w: it is a %s", ErrSubjectNotRegular, fileType(before.Mode))
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("fcntl: %w", err)
	}
	if fl&unix.O_PATH != 0 || fl&unix.O_ACCMODE == unix.O_WRONLY {
		return nil, 0, ErrSubjectUnreadable
	}
	if before.Size > maxSize {
		return nil, 0, fmt.Errorf("%w: %d bytes, limit %d", ErrSubjectTooLarge, before.Size, maxSize)
	}
	h := sha256.New()
	// 1 MiB reads: large enough that syscalls vanish next to hashing.
	buf := make([]byte, min(1<<20, max(before.Size, 1)))
	var off int64
	for off < before.Size {
		if err := ctx.Err(); err != nil {
			return nil, 0, fmt.Errorf("hashing stopped after %d of %d bytes: %w", off, before.Size, err)
		}
		n, err := unix.Pread(fd, buf[:min(int64(len(buf)), before.Size-off)], off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, 0, fmt.Errorf("reading at %d: %w", off, err)
		}
		if n == 0 {
			return nil, 0, fmt.Errorf("%w: it shrank below %d bytes", ErrSubjectChanged, before.Size)
		}
		h.Write(buf[:n])
		off += int64(n)
		if testHookAfterFirstRead != nil && off == int64(n) {
			testHookAfterFirstRead()
		}
	}
	var after unix.Stat_t
	if err := unix.Fstat(fd, &after); err != nil {
		return nil, 0, fmt.Errorf("fstat: %w", err)
	}
	switch {
	case after.Size > before.Size:
		return nil, 0, fmt.Errorf("%w: it grew past %d bytes", ErrSubjectChanged, before.Size)
	case after.Size != before.Size || after.Mtim != before.Mtim || after.Ctim != before.Ctim:
		return nil, 0, fmt.Errorf("%w: size, modification or change time differ", ErrSubjectChanged)
	}
	return h.Sum(nil), before.Size, nil
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFLNK:
		return "symbolic link"
	}
	return fmt.Sprintf("file of type %#o", mode&unix.S_IFMT)
}

// checkSubjectName accepts the name a subject is recorded under: a clean,
// relative, printable path of at most maxSubjectName bytes. The name is a
// label in the provenance (the agent never opens it), so it must not be
// able to pose as another place or break the consumer's display.
func checkSubjectName(name string) error {
	switch {
	case name == "" || len(name) > maxSubjectName:
		return fmt.Errorf("%w: %d bytes, want 1 to %d", ErrSubjectName, len(name), maxSubjectName)
	case !utf8.ValidString(name) || strings.IndexFunc(name, unicode.IsControl) >= 0:
		return fmt.Errorf("%w: %q has control characters or is not UTF-8", ErrSubjectName, name)
	case !filepath.IsLocal(name) || filepath.Clean(name) != name:
		return fmt.Errorf("%w: %q is not a clean path inside the workspace", ErrSubjectName, name)
	}
	return nil
}
