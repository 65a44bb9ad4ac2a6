package bridge

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
)

func parseLines(t *testing.T, text string) ([]Config, error) {
	t.Helper()
	var p Parser
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		key, value, _ := strings.Cut(line, " ")
		if err := p.Line("test.conf:"+strconv.Itoa(i+1), key, value); err != nil {
			return nil, err
		}
	}
	return p.Finish("host")
}

// TestConfigMosquittoSection: a bridge section as written for mosquitto.conf
// parses unchanged, with Mosquitto's defaults where keys are absent.
func TestConfigMosquittoSection(t *testing.T) {
	cfgs, err := parseLines(t, `
# bridge to the cloud
connection cloud
address broker1.example.com:8883 broker2.example.com
topic sensors/# out 1 edge/ site7/
topic cmd/# in 2 "" site7/
topic "" both 0 local/status remote/status
remote_clientid edge-7
remote_username edge
remote_password s3cret
cleansession false
keepalive_interval 30
bridge_protocol_version mqttv50
notifications true
restart_timeout 2 20
try_private true
connection second
addresses 10.0.0.1:1883,10.0.0.2:1884
topic # both
`)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfgs) != 2 {
		t.Fatalf("%d bridges", len(cfgs))
	}
	c := cfgs[0]
	if c.Name != "cloud" || len(c.Addresses) != 2 || c.Addresses[0] != "broker1.example.com:8883" || c.Addresses[1] != "broker2.example.com:1883" {
		t.Fatalf("addresses %q", c.Addresses)
	}
	want := []Topic{
		{"sensors/#", Out, 1, "edge/", "site7/"},
		{"cmd/#", In, 2, "", "site7/"},
		{"", Both, 0, "local/status", "remote/status"},
	}
	for i, w := range want {
		if c.Topics[i] != w {
			t.Fatalf("topic %d: %+v, want %+v", i, c.Topics[i], w)
		}
	}
	if c.Topics[0].LocalFilter() != "edge/sensors/#" || c.Topics[0].RemoteFilter() != "site7/sensors/#" {
		t.Fatal("filters")
	}
	if c.RemoteClientID != "edge-7" || c.LocalClientID != "local.edge-7" || c.RemoteUsername != "edge" || c.RemotePassword != "s3cret" {
		t.Fatalf("identity %+v", c)
	}
	if c.CleanSession || c.LocalCleanSession || c.KeepAlive != 30*time.Second || c.ProtocolVersion != codec.V5 {
		t.Fatalf("session %+v", c)
	}
	if c.RestartBase != 2*time.Second || c.RestartCap != 20*time.Second || !c.Notifications ||
		c.NotificationTopic != "$SYS/broker/connection/cloud/state" {
		t.Fatalf("restart/notifications %+v", c)
	}
	d := cfgs[1]
	if d.RemoteClientID != "host.second" || d.ProtocolVersion != codec.V311 || !d.TryPrivate || d.KeepAlive != 60*time.Second ||
		d.RestartBase != 5*time.Second || d.RestartCap != 30*time.Second || d.Topics[0] != (Topic{"#", Both, 0, "", ""}) ||
		len(d.Addresses) != 2 {
		t.Fatalf("defaults %+v", d)
	}
}

// TestConfigErrors: every invalid line fails with its file, line and why.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"address h:1", "test.conf:1: address: bridge setting before any"},
		{"connection a\naddress h:1\ntopic x/# sideways", `test.conf:3: topic: direction "sideways"`},
		{"connection a\naddress h:1\ntopic x/# out 3", `test.conf:3: topic: QoS "3"`},
		{"connection a\naddress h:1\ntopic x/# out 1 pre/", "a local prefix needs a remote prefix"},
		{"connection a\naddress h:1\ntopic x/#/y out", "test.conf:3: topic: filter"},
		{"connection a\naddress h:1\ntopic x out 0 a/+/ b/", "wildcard"},
		{"connection a\naddress h:99999\ntopic x", "test.conf:2: address"},
		{"connection a\naddress h:1\ntopic x\nbridge_protocol_version mqttv4", "test.conf:4: bridge_protocol_version"},
		{"connection a\naddress h:1\ntopic x\ncleansession maybe", "test.conf:4: cleansession: want true or false"},
		{"connection a\naddress h:1\ntopic x\nkeepalive_interval 0", "test.conf:4: keepalive_interval"},
		{"connection a\naddress h:1\ntopic x\nrestart_timeout 10 5", "test.conf:4: restart_timeout"},
		{"connection a\naddress h:1\ntopic x\nstart_type lazy", "only automatic"},
		{"connection a\naddress h:1\ntopic x\nbridge_psk 00", "test.conf:4: bridge_psk: TLS-PSK is not supported"},
		{"connection a\naddress h:1\ntopic x\nbridge_cafile /nonexistent.pem", "test.conf:4: bridge_cafile"},
		{"connection a\naddress h:1\ntopic x\nbridge_insecure true", "TLS settings without bridge_cafile"},
		{"connection a\ntopic x", "test.conf:1: connection a: no address"},
		{"connection a\naddress h:1", "no topic"},
		{"connection a\naddress h:1\ntopic x\nconnection a", `test.conf:4: connection "a": already defined at test.conf:1`},
		{"connection a b", "connection: want a name"},
	} {
		_, err := parseLines(t, tc.text)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want %q", tc.text, err, tc.want)
		}
	}
	var p Parser
	if err := p.Line("f:1", "no_such_key", "1"); err == nil || !strings.Contains(err.Error(), `f:1: unknown bridge setting "no_such_key"`) {
		t.Fatalf("unknown key: %v", err)
	}
}

// TestBackoff: decorrelated jitter stays within [base, cap] and grows;
// one value is a constant wait.
func TestBackoff(t *testing.T) {
	b := &Bridge{cfg: Config{RestartBase: time.Second, RestartCap: 8 * time.Second}}
	prev := time.Second
	maxSeen := time.Duration(0)
	for range 200 {
		d := b.backoff(&prev)
		if d < time.Second || d > 8*time.Second {
			t.Fatalf("wait %v outside [1s, 8s]", d)
		}
		maxSeen = max(maxSeen, d)
	}
	if maxSeen < 4*time.Second {
		t.Fatalf("back-off never grew: max %v", maxSeen)
	}
	b.cfg.RestartCap = 0
	if d := b.backoff(&prev); d != time.Second {
		t.Fatalf("constant: %v", d)
	}
}

// TestMapTopic: prefixes are swapped each way; "pre/#" also matches "pre"
// itself, which maps to the other prefix without its '/'; the first
// matching line wins; a direction the line does not carry is not mapped.
func TestMapTopic(t *testing.T) {
	m, err := NewManager([]Config{{Name: "x", Topics: []Topic{
		{Pattern: "#", Dir: Out, LocalPrefix: "site/", RemotePrefix: "cloud/site/"},
		{Pattern: "cmd/+", Dir: In, LocalPrefix: "", RemotePrefix: "cloud/"},
		{Pattern: "", Dir: Both, LocalPrefix: "local/status", RemotePrefix: "remote/status"},
	}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := m.bridges[0]
	for _, tc := range []struct {
		local bool
		in    string
		want  string
		ok    bool
	}{
		{true, "site/a/b", "cloud/site/a/b", true},
		{true, "site", "cloud/site", true},
		{true, "other/a", "", false},
		{false, "cloud/site/a", "", false}, // line 1 is out only
		{false, "cloud/cmd/reboot", "cmd/reboot", true},
		{false, "cloud/cmd/a/b", "", false},
		{true, "local/status", "remote/status", true},
		{false, "remote/status", "local/status", true},
	} {
		got, _, ok := b.mapTopic(tc.local, []byte(tc.in))
		if ok != tc.ok || got != tc.want {
			t.Errorf("mapTopic(local=%v, %q) = %q, %v; want %q, %v", tc.local, tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
