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
