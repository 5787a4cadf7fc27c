package bundles

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
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
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, fmt.Errorf("reading decision input: %s must be %s, not a JSON %s (docs/policy.md §12)", te.Field, inputShape(te.Field), te.Value)
		}
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

// inputShape says what the input field at path holds.
func inputShape(path string) string {
	switch path {
	case "tool":
		return `an object {"name": …, "annotations": {…}}`
	case "identity":
		return `an object {"subject": …, "groups": […], "claims": {…}}`
	case "state":
		return `an object of counter values {"tool.counter": 3}`
	case "identity.groups":
		return "a list of strings"
	case "server", "tool.name", "identity.subject":
		return "a string"
	}
	if strings.HasPrefix(path, "identity.groups") {
		return "a list of strings"
	}
	if strings.HasPrefix(path, "state.") {
		return "a whole number"
	}
	return "another type"
}

func nullToNil(r json.RawMessage) json.RawMessage {
	if len(r) == 0 || string(r) == "null" {
		return nil
	}
	return r
}
