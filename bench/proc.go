package bench

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ProcStat is what /proc says about a process.
type ProcStat struct {
	RSSBytes   int64
	CPUSeconds float64 // user + system
}

// ReadProc reads RSS and CPU time of pid from /proc.
func ReadProc(pid int) (ProcStat, error) {
	var st ProcStat
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, fmt.Errorf("cannot read broker process: %w", err)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			fields := strings.Fields(rest)
			if len(fields) > 0 {
				kb, _ := strconv.ParseInt(fields[0], 10, 64)
				st.RSSBytes = kb * 1024
			}
		}
	}
	f.Close()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, err
	}
	// Fields after the parenthesised command name; utime and stime are the
	// 14th and 15th fields of the whole line.
	s := string(raw)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		f := strings.Fields(s[i+1:])
		if len(f) > 13 {
			ut, _ := strconv.ParseFloat(f[11], 64)
			stt, _ := strconv.ParseFloat(f[12], 64)
			st.CPUSeconds = (ut + stt) / clockTicks
		}
	}
	return st, nil
}

// clockTicks is USER_HZ, 100 on every Linux we run on.
const clockTicks = 100

// ProcIO is the system-call part of /proc/PID/io: read-family (read,
// readv, pread64, preadv) and write-family (write, writev, pwrite64,
// pwritev) calls the process made, summed over all its threads, live and
// exited. The kernel counts these in fs/read_write.c only: send, sendto,
// sendmsg, recv, recvfrom, recvmsg, epoll_wait, io_uring and every other
// call are not in them.
type ProcIO struct {
	SyscR, SyscW int64
}

// ReadProcIO reads syscr and syscw of pid (the thread group) from
// /proc/PID/io, which needs ptrace access to the process (same user, or
// root).
func ReadProcIO(pid int) (ProcIO, error) {
	var io ProcIO
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return io, fmt.Errorf("cannot read broker system calls: %w", err)
	}
	seen := 0
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "syscr":
			io.SyscR, seen = n, seen+1
		case "syscw":
			io.SyscW, seen = n, seen+1
		}
	}
	if seen != 2 {
		return io, fmt.Errorf("/proc/%d/io has no syscr and syscw", pid)
	}
	return io, nil
}

// ProcComm is the process name the kernel gives pid (/proc/PID/comm):
// the first 15 bytes of the executable's base name after exec, or what
// the process set with prctl(PR_SET_NAME).
func ProcComm(pid int) (string, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(string(raw), "\n"), nil
}
