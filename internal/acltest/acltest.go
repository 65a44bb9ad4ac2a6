// Package acltest asks a running MQTT broker, through real clients, what
// its ACL allows: for each Probe, may this identity publish to (Write) or
// receive from (read) this topic. The same probes run against Mosquitto
// (to pin down its semantics) and against TinyMQ (to check that it
// matches).
//
// How a decision is observed. Write: a privileged client subscribed to the
// topic sees the prober's QoS 1 PUBLISH or not. Read: the prober,
// subscribed to the topic, receives the privileged client's QoS 1 PUBLISH
// or not; for a $SYS topic, which nobody may publish, it receives the
// broker's retained message there or not (probe a topic the broker
// retains, such as $SYS/broker/version). "Not delivered" is told from "not
// yet delivered" without sleeping: after the probe message the privileged
// client publishes a sentinel (QoS 1, topic Sentinel) to the same
// receiver, and the receiver reads until the sentinel; MQTT keeps one
// publisher's messages in order, and the probe message was routed before
// its PUBACK.
//
// The broker's ACL must let every probe identity read Sentinel, and the
// privileged user read and write Sentinel and read every probed topic.
package acltest

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Sentinel is the topic of the messages that close each observation.
const Sentinel = "acltest/sentinel"

// Probe is one question: may this identity write (publish) to Topic, or
// read (receive) from it?
type Probe struct {
	User     string
	HasUser  bool // false: connect without a user name (anonymous)
	Password string
	ClientID string
	Topic    string
	Write    bool
	// Filter, for a read probe, is what the prober subscribes to (default:
	// Topic itself): a broader filter such as "#" asks whether each
	// delivery is checked, not only the SUBSCRIBE.
	Filter string
}

func (p Probe) String() string {
	who := "anonymous"
	if p.HasUser {
		who = "user " + p.User
	}
	op := "read"
	if p.Write {
		op = "write"
	}
	if p.Filter != "" {
		op += " through " + p.Filter
	}
	return fmt.Sprintf("%s (client %q) %s %q", who, p.ClientID, op, p.Topic)
}

const waitFor = 5 * time.Second

var nonce atomic.Int64

type msg struct{ topic, payload string }

// client is a connected paho client whose messages go to ch, in order.
type client struct {
	c  mqtt.Client
	ch chan msg
}

func connect(addr, clientID, user, pass string, hasUser bool) (*client, error) {
	cl := &client{ch: make(chan msg, 256)}
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).
		SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false).
		SetConnectRetry(false).SetOrderMatters(true).SetConnectTimeout(waitFor).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			select {
			case cl.ch <- msg{m.Topic(), string(m.Payload())}:
			default: // a flood (e.g. $SYS); the probes never need this many
			}
		})
	if hasUser {
		o.SetUsername(user).SetPassword(pass)
	}
	cl.c = mqtt.NewClient(o)
	if err := wait(cl.c.Connect()); err != nil {
		return nil, fmt.Errorf("connect %q: %w", clientID, err)
	}
	return cl, nil
}

func wait(tok mqtt.Token) error {
	if !tok.WaitTimeout(waitFor) {
		return fmt.Errorf("timed out after %v", waitFor)
	}
	return tok.Error()
}

func (cl *client) subscribe(topics ...string) error {
	m := map[string]byte{}
	for _, t := range topics {
		m[t] = 1
	}
	return wait(cl.c.SubscribeMultiple(m, nil))
}

func (cl *client) publish(topic, payload string) error {
	return wait(cl.c.Publish(topic, 1, false, payload))
}

// until reads messages until the sentinel payload and reports whether a
// message matching want came before it.
func (cl *client) until(sentinel string, want func(msg) bool) (seen bool, err error) {
	deadline := time.After(waitFor)
	for {
		select {
		case m := <-cl.ch:
			if m.topic == Sentinel && m.payload == sentinel {
				return seen, nil
			}
			if want(m) {
				seen = true
			}
		case <-deadline:
			return seen, fmt.Errorf("sentinel not delivered within %v (can this identity read %s?)", waitFor, Sentinel)
		}
	}
}

// Run asks the broker at addr each probe's question and returns the
// answers, true for "allowed", in probe order. privUser/privPass identify
// the privileged observer. Failures of the machinery (a refused
// connection, a missing sentinel) are reported with t.Errorf and count as
// false.
func Run(t testing.TB, addr string, privUser, privPass string, probes []Probe) []bool {
	t.Helper()
	out := make([]bool, len(probes))
	priv, err := connect(addr, fmt.Sprintf("acltest-priv-%d", nonce.Add(1)), privUser, privPass, true)
	if err != nil {
		t.Errorf("acltest: privileged client: %v", err)
		return out
	}
	defer priv.c.Disconnect(0)
	if err := priv.subscribe(Sentinel); err != nil {
		t.Errorf("acltest: privileged client: subscribe %s: %v", Sentinel, err)
		return out
	}
	for i, p := range probes {
		var err error
		if p.Write {
			out[i], err = probeWrite(addr, priv, p)
		} else {
			out[i], err = probeRead(addr, priv, p)
		}
		if err != nil {
			t.Errorf("acltest: probe %d, %v: %v", i, p, err)
		}
	}
	return out
}

func probeWrite(addr string, priv *client, p Probe) (bool, error) {
	for len(priv.ch) > 0 { // the sentinels of earlier read probes
		<-priv.ch
	}
	if err := priv.subscribe(p.Topic); err != nil {
		return false, fmt.Errorf("observer subscribe: %w", err)
	}
	defer func() { _ = wait(priv.c.Unsubscribe(p.Topic)) }()
	pr, err := connect(addr, p.ClientID, p.User, p.Password, p.HasUser)
	if err != nil {
		return false, err
	}
	payload := fmt.Sprintf("probe-%d", nonce.Add(1))
	// A broker may close the connection of a client publishing where it
	// may not (MQTT 5 style); that is a refusal, not an error.
	_ = pr.publish(p.Topic, payload)
	pr.c.Disconnect(0)
	sentinel := fmt.Sprintf("sentinel-%d", nonce.Add(1))
	if err := priv.publish(Sentinel, sentinel); err != nil {
		return false, fmt.Errorf("sentinel publish: %w", err)
	}
	return priv.until(sentinel, func(m msg) bool { return m.payload == payload })
}

func probeRead(addr string, priv *client, p Probe) (bool, error) {
	pr, err := connect(addr, p.ClientID, p.User, p.Password, p.HasUser)
	if err != nil {
		return false, err
	}
	defer pr.c.Disconnect(0)
	filter := p.Topic
	if p.Filter != "" {
		filter = p.Filter
	}
	if err := pr.subscribe(filter, Sentinel); err != nil {
		return false, fmt.Errorf("prober subscribe: %w", err)
	}
	payload := fmt.Sprintf("probe-%d", nonce.Add(1))
	sys := strings.HasPrefix(p.Topic, "$SYS")
	if !sys {
		if err := priv.publish(p.Topic, payload); err != nil {
			return false, fmt.Errorf("publish: %w", err)
		}
	}
	sentinel := fmt.Sprintf("sentinel-%d", nonce.Add(1))
	if err := priv.publish(Sentinel, sentinel); err != nil {
		return false, fmt.Errorf("sentinel publish: %w", err)
	}
	return pr.until(sentinel, func(m msg) bool {
		if sys {
			return m.topic == p.Topic // the broker's retained message
		}
		return m.payload == payload
	})
}
