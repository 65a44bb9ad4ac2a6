package bench

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/tinymq/tinymq/codec"
)

// Machine describes where a run happened.
type Machine struct {
	Cores int `json:"cores"`
	// Processors counts the "processor" lines of /proc/cpuinfo (Cores is
	// what this process may run on).
	Processors int    `json:"cpuinfo_processors,omitempty"`
	CPU        string `json:"cpu,omitempty"`
	Kernel     string `json:"kernel"`
	Go         string `json:"go"`
}

// ThisMachine reads the machine's description from /proc.
func ThisMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") && m.CPU == "" {
				m.CPU = strings.TrimSpace(l[strings.IndexByte(l, ':')+1:])
			}
			if k, _, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "processor" {
				m.Processors++
			}
		}
	}
	return m
}

// Record is one result as a JSON line: which run, where, against what,
// with which parameters.
type Record struct {
	Run           string `json:"run"` // run id, shared by every line of one invocation
	Time          string `json:"time"`
	Scenario      string `json:"scenario"`
	Broker        string `json:"broker"`
	BrokerVersion string `json:"broker_version"`
	// Process is /proc/PID/comm of the process measured (compare).
	Process string  `json:"process,omitempty"`
	Machine Machine `json:"machine"`
	Params  any     `json:"params"`
	Result  any     `json:"result"`
}

// NewRunID returns a fresh run id: UTC time plus 4 random bytes.
func NewRunID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// WriteRecord writes r as one JSON line.
func WriteRecord(w io.Writer, r Record) error {
	if r.Time == "" {
		r.Time = time.Now().UTC().Format(time.RFC3339)
	}
	if r.Machine.Cores == 0 {
		r.Machine = ThisMachine()
	}
	return json.NewEncoder(w).Encode(r)
}

// BrokerVersion asks an MQTT broker for $SYS/broker/version (TinyMQ and
// Mosquitto publish it retained), or returns "unknown" within timeout.
func BrokerVersion(addr string, timeout time.Duration) string {
	c, r, err := dialMQTT(addr, "bench-version-"+NewRunID())
	if err != nil {
		return "unknown"
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	sub := codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte("$SYS/broker/version")}}}
	if _, err := c.Write(sub.AppendTo(nil, codec.V311)); err != nil {
		return "unknown"
	}
	for {
		h, body, err := readPacket(r)
		if err != nil {
			return "unknown"
		}
		if h.Type != codec.TypePublish {
			continue
		}
		var p codec.Publish
		if p.Decode(codec.V311, h, body) == nil && len(p.Payload) > 0 {
			return string(p.Payload)
		}
	}
}
