package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/toolgate/toolgate/compiler/policy"
)

// maxConfigSize is the largest config file accepted.
const maxConfigSize = 1 << 20

// pathAnnotation marks a flag whose value is a file or folder: in a config
// file, a relative value is taken relative to the config file's folder.
const pathAnnotation = "toolgate/path"

// markPaths marks flags as path-valued (see pathAnnotation).
func markPaths(fs *pflag.FlagSet, names ...string) {
	for _, n := range names {
		if err := fs.SetAnnotation(n, pathAnnotation, []string{"true"}); err != nil {
			panic(err) // a flag name typo in this package
		}
	}
}

// configCommandKey is the config key holding the stdio server command (what
// follows -- on the command line).
const configCommandKey = "command"

// applyConfig reads the YAML config file at path into fs. The file is one
// mapping whose keys are the command's long flag names without "--" (so
// `toolgate proxy --help` documents every key), plus "command", the server
// command as a list of strings. Contracts:
//
//   - a flag given on the command line wins over the file;
//   - a scalar value is set as the flag's text would be; a list is joined
//     with commas (for list flags such as key and groups);
//   - a relative path in a path-valued key is relative to the file's folder;
//   - an unknown key, a repeated key, a wrong shape or a bad value is an
//     error naming file:line:col (the command then stops; nothing runs).
//
// It returns the command list (nil when the file has none).
func applyConfig(fs *pflag.FlagSet, path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > maxConfigSize {
		return nil, fmt.Errorf("%s: config file larger than %d bytes", path, maxConfigSize)
	}
	return parseConfig(fs, path, raw)
}

// parseConfig is applyConfig on the file's contents, raw.
func parseConfig(fs *pflag.FlagSet, path string, raw []byte) ([]string, error) {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(raw)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil // an empty file sets nothing
		}
		first := policy.YAMLProblems(err)[0]
		return nil, fmt.Errorf("%s:%d:1: %s", path, first.Line, first.Msg)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	at := func(n *yaml.Node, format string, args ...any) error {
		return fmt.Errorf("%s:%d:%d: %s", path, n.Line, n.Column, fmt.Sprintf(format, args...))
	}
	if root.Kind != yaml.MappingNode {
		return nil, at(root, "the config file must be a mapping of flag names to values")
	}
	var known []string
	fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Name != "config" && fl.Name != "help" {
			known = append(known, fl.Name)
		}
	})
	known = append(known, configCommandKey)
	sort.Strings(known)

	type setting struct {
		flag  *pflag.Flag
		value string
		node  *yaml.Node
	}
	var settings []setting
	var command []string
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, at(k, "keys must be flag names")
		}
		key := k.Value
		if seen[key] {
			return nil, at(k, "%q is set twice", key)
		}
		seen[key] = true
		if key == configCommandKey {
			if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
				return nil, at(v, "command must be a non-empty list of strings, e.g. [npx, -y, server-name]")
			}
			for _, e := range v.Content {
				if e.Kind != yaml.ScalarNode {
					return nil, at(e, "command entries must be strings")
				}
				command = append(command, e.Value)
			}
			continue
		}
		fl := fs.Lookup(key)
		if fl == nil || key == "config" || key == "help" {
			msg := fmt.Sprintf("unknown key %q", key)
			if s := policy.Suggest(key, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			return nil, at(k, "%s; the keys are the flags of `toolgate proxy --help` and %q", msg, configCommandKey)
		}
		_, isPath := fl.Annotations[pathAnnotation]
		resolve := func(s string) string {
			if isPath && s != "" && !filepath.IsAbs(s) && !looksLikeReference(s) {
				return filepath.Join(filepath.Dir(path), s)
			}
			return s
		}
		var value string
		switch v.Kind {
		case yaml.ScalarNode:
			value = resolve(v.Value)
		case yaml.SequenceNode:
			if !strings.HasSuffix(fl.Value.Type(), "Slice") && fl.Name != "groups" {
				return nil, at(v, "%s takes one value, not a list", key)
			}
			parts := make([]string, 0, len(v.Content))
			for _, e := range v.Content {
				if e.Kind != yaml.ScalarNode || strings.Contains(e.Value, ",") {
					return nil, at(e, "%s: list entries must be plain strings without commas", key)
				}
				parts = append(parts, resolve(e.Value))
			}
			value = strings.Join(parts, ",")
		default:
			return nil, at(v, "%s must be a value or a list, not a mapping", key)
		}
		if fl.Changed {
			continue // the command line wins
		}
		settings = append(settings, setting{fl, value, v})
	}
	for _, s := range settings {
		if err := s.flag.Value.Set(s.value); err != nil {
			if s.flag.Value.Type() == "bool" {
				return nil, at(s.node, "%s must be true or false, not %q", s.flag.Name, s.value)
			}
			return nil, at(s.node, "%s: %v", s.flag.Name, err)
		}
		s.flag.Changed = true
	}
	return command, nil
}

// looksLikeReference reports whether a path-valued setting is in fact a
// registry or layout reference (--bundle REF@DIGEST).
func looksLikeReference(s string) bool {
	return strings.Contains(s, "@sha256:") || strings.HasPrefix(s, "oci:")
}
