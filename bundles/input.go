package bundles

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
)

// ParseInput reads a decision input in the JSON form of policy.md §6, as
// `toolgate eval` takes it. Counter values in "state" must be whole numbers.
func ParseInput(data []byte) (*Input, error) {
	var raw struct {
		Server string `json:"server"`
		Tool   struct {
			Name        string          `json:"name"`
			Annotations json.RawMessage `json:"annotations"`
		} `json:"tool"`
		Arguments json.RawMessage `json:"arguments"`
		Identity  struct {
			Subject string          `json:"subject"`
			Groups  []string        `json:"groups"`
			Claims  json.RawMessage `json:"claims"`
		} `json:"identity"`
		State map[string]json.Number `json:"state"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("reading decision input: %w", err)
	}
	in := &Input{
		Server: raw.Server, Tool: raw.Tool.Name,
		Annotations: nullToNil(raw.Tool.Annotations), Arguments: nullToNil(raw.Arguments),
		Identity: Identity{Subject: raw.Identity.Subject, Groups: raw.Identity.Groups, Claims: nullToNil(raw.Identity.Claims)},
	}
	keys := make([]string, 0, len(raw.State))
	for k := range raw.State {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v, err := raw.State[k].Int64()
		if err != nil {
			return nil, fmt.Errorf("reading decision input: state %q: %q is not a whole number", k, raw.State[k])
		}
		in.State = append(in.State, CounterValue{Key: k, Value: v})
	}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
	}{{"tool.annotations", in.Annotations}, {"arguments", in.Arguments}, {"identity.claims", in.Identity.Claims}} {
		if len(f.raw) > 0 && f.raw[0] != '{' {
			return nil, fmt.Errorf("reading decision input: %s must be an object", f.name)
		}
	}
	return in, nil
}

func nullToNil(r json.RawMessage) json.RawMessage {
	if len(r) == 0 || string(r) == "null" {
		return nil
	}
	return r
}
