package bundles

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// File names inside a bundle (architecture.md "Bundle").
const (
	ManifestFile = "/.manifest"
	WasmFile     = "/policy.wasm"
	DataFile     = "/data.json"
	RegoFile     = "/policy.rego"
	// SourcesDir holds the policy YAML files the bundle was built from,
	// under their repository paths.
	SourcesDir = "/sources/"
)

// Errors returned by [Read]; each is wrapped with the detail.
var (
	// ErrCorrupt: the archive is not a readable gzip'd tar.
	ErrCorrupt = errors.New("bundle is not a valid .tar.gz")
	// ErrUnsafeEntry: an entry is a link, a device, has an absolute path, a
	// ".." element or appears twice.
	ErrUnsafeEntry = errors.New("bundle has an unsafe entry")
	// ErrTooLarge: the bundle or one of its files is over the limit.
	ErrTooLarge = errors.New("bundle is over the size limit")
	// ErrInvalid: a required file is missing or the manifest does not
	// describe a toolgate bundle.
	ErrInvalid = errors.New("bundle is not a toolgate bundle")
)

// Bundle is an OPA bundle as toolgate builds it: the Wasm module, its data,
// the generated Rego and the policy sources, described by a manifest.
type Bundle struct {
	Manifest Manifest
	Wasm     []byte
	// Data is /data.json; nil is written as {}.
	Data []byte
	Rego []byte
	// Sources are the policy YAML files, by repository path ("policies/x.yaml").
	Sources []File
}

// File is one file in a bundle.
type File struct {
	Path string
	Data []byte
}

// Manifest is the bundle's /.manifest, in OPA's format.
type Manifest struct {
	// Revision is the git commit the bundle was built from.
	Revision string         `json:"revision"`
	Roots    []string       `json:"roots"`
	Wasm     []WasmResolver `json:"wasm"`
	Metadata Metadata       `json:"metadata"`
}

// WasmResolver maps a Wasm module to an entrypoint, as OPA's manifest does.
type WasmResolver struct {
	Entrypoint string `json:"entrypoint"`
	Module     string `json:"module"`
}

// Metadata is toolgate's part of the manifest.
type Metadata struct {
	// Compiler is the version of toolgate that built the bundle.
	Compiler string `json:"compiler"`
	// Sources lists each policy file with its sha256.
	Sources []SourceDigest `json:"sources"`
	// Servers lists the servers the bundle governs, sorted.
	Servers []string `json:"servers"`
	// Reads, when set, lists what of a call the policy reads, so that the
	// runtime can leave the rest out of the Wasm input. Absent: everything.
	Reads *Reads `json:"reads,omitempty"`
	// Compact, when set, names a second entrypoint that gives the same
	// decision with each counter as an [id, amount] pair indexing
	// Compact.Counters: a much smaller result for the runtime to read.
	Compact *Compact `json:"compact,omitempty"`
	// Approvers, by the rule id a require_approval decision names
	// (Approval.Rule), lists who may decide that rule's approvals (the
	// `approvers:` extension); a rule absent here may be decided by any
	// approver. It lives beside the decision, not in it, so that decisions
	// stay exactly those of policy.md §6.
	Approvers map[string]Approvers `json:"approvers,omitempty"`
}

// Approvers are who may decide an approval: a person qualifies by subject or
// by one of their groups.
type Approvers struct {
	Subjects []string `json:"subjects,omitempty"`
	Groups   []string `json:"groups,omitempty"`
}

// Allows reports whether the person with this subject and groups may decide.
func (a Approvers) Allows(subject string, groups []string) bool {
	for _, s := range a.Subjects {
		if s == subject {
			return true
		}
	}
	for _, g := range a.Groups {
		for _, h := range groups {
			if g == h {
				return true
			}
		}
	}
	return false
}

// Compact describes a bundle's compact entrypoint.
type Compact struct {
	Entrypoint string `json:"entrypoint"`
	// Counters are the counters by id; Amount is the fixed increment, 0 for
	// one taken from an argument.
	Counters []Reservation `json:"counters"`
	// Cuts lists, for each counter (same index as Counters), the numbers
	// the policy's conditions compare that counter's value with, sorted.
	// Values between two cuts decide alike, so the host may send the
	// representative [Compact.Canonicalize] picks instead of the value
	// itself: the same decision, and an input the decision memo has seen
	// before. Nil in bundles built before it existed.
	Cuts [][]float64 `json:"cuts,omitempty"`
}

// Canonicalize replaces each counter value of state, which lists the
// counters of c in order (as the host reads them for a decision), with the
// representative of its class between c's cuts: the value itself when it
// is a cut; else the smallest whole number above the cut below it, or,
// below every cut, the largest whole number under the first; 0 for a
// counter no condition reads. The policy decides the same for both values.
// It does nothing when state does not list c's counters in order, when c
// has no cuts, or for a value too large to compare exactly as a float64.
func (c *Compact) Canonicalize(state []CounterValue) {
	if len(c.Cuts) != len(c.Counters) || len(state) != len(c.Counters) {
		return
	}
	for i := range state {
		if state[i].Key != c.Counters[i].Key {
			return
		}
	}
	for i := range state {
		state[i].Value = canonicalValue(state[i].Value, c.Cuts[i])
	}
}

// exactFloat is the largest magnitude up to which every whole number is a
// float64.
const exactFloat = 1 << 53

func canonicalValue(v int64, cuts []float64) int64 {
	if v >= exactFloat || v <= -exactFloat {
		return v
	}
	if len(cuts) == 0 {
		return 0
	}
	f := float64(v)
	i, found := slices.BinarySearch(cuts, f)
	switch {
	case found:
		return v
	case i == 0:
		return int64(math.Ceil(min(cuts[0], exactFloat))) - 1
	default:
		return int64(math.Floor(max(cuts[i-1], -exactFloat))) + 1
	}
}

// CompactEntrypoint is the compact entrypoint toolgate's compiler emits.
const CompactEntrypoint = "toolgate/compact"

// Reads is what of a call's input a policy reads.
type Reads struct {
	// Arguments are the argument paths (lists of object keys) any rule
	// reads, sorted; empty when no rule reads arguments.
	Arguments [][]string `json:"arguments"`
	// Annotations says whether a rule reads tool.annotations paths: the
	// runtime then needs the annotations the server lists for every tool
	// called. Absent (nil, as in bundles built before it was written)
	// means they may be read.
	Annotations *bool `json:"annotations,omitempty"`
}

// SourceDigest names a policy source file and its content's sha256 (hex).
type SourceDigest struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
}

// SHA256Hex returns the hex sha256 of b.
func SHA256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// SourceEntry is where, under SourcesDir, a policy file given by path is
// stored: the path cleaned, with any leading "/" and "../" dropped (a build
// from "../policies" or an absolute path stores "policies/…"), so that
// every entry stays inside the bundle. Decisions still name the path as
// given.
func SourceEntry(path string) string {
	p := filepath.ToSlash(filepath.Clean(path))
	for {
		switch {
		case strings.HasPrefix(p, "/"):
			p = p[1:]
		case strings.HasPrefix(p, "../"):
			p = p[3:]
		default:
			return p
		}
	}
}

// Write writes b as a .tar.gz. The output depends only on b: entries are in
// a fixed order with fixed times, owners and modes, and the gzip header
// carries no name or time, so the same bundle always gives the same bytes.
func Write(w io.Writer, b *Bundle) error {
	manifest, err := json.MarshalIndent(b.Manifest, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding manifest: %w", err)
	}
	data := b.Data
	if data == nil {
		data = []byte("{}")
	}
	files := []File{{ManifestFile, manifest}, {DataFile, data}, {WasmFile, b.Wasm}, {RegoFile, b.Rego}}
	sources := append([]File(nil), b.Sources...)
	sort.Slice(sources, func(i, j int) bool { return sources[i].Path < sources[j].Path })
	for _, s := range sources {
		files = append(files, File{SourcesDir + SourceEntry(s.Path), s.Data})
	}
	gz, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(gz)
	for _, f := range files {
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     f.Path,
			Size:     int64(len(f.Data)),
			Mode:     0o644,
			ModTime:  time.Unix(0, 0).UTC(),
			Format:   tar.FormatPAX,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("writing %s: %w", f.Path, err)
		}
		if _, err := tw.Write(f.Data); err != nil {
			return fmt.Errorf("writing %s: %w", f.Path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

// Limits bounds what [Read] accepts. A zero field takes its default.
type Limits struct {
	// MaxCompressed is the most bytes read from the archive; default 32 MiB.
	MaxCompressed int64
	// MaxUncompressed is the most bytes all files may hold together once
	// decompressed (gzip bombs stop here); default 128 MiB.
	MaxUncompressed int64
	// MaxFiles is the most entries the archive may have; default 10,000.
	MaxFiles int
}

func (l Limits) withDefaults() Limits {
	if l.MaxCompressed <= 0 {
		l.MaxCompressed = 32 << 20
	}
	if l.MaxUncompressed <= 0 {
		l.MaxUncompressed = 128 << 20
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = 10000
	}
	return l
}

// Read reads and checks a bundle written by [Write] (or by any tool that
// writes the same layout). It never panics on bad input: every problem is an
// error wrapping one of ErrCorrupt, ErrUnsafeEntry, ErrTooLarge, ErrInvalid.
func Read(r io.Reader, lim Limits) (*Bundle, error) {
	lim = lim.withDefaults()
	cr := &countingReader{r: r, left: lim.MaxCompressed}
	gz, err := gzip.NewReader(cr)
	if err != nil {
		if cr.over {
			return nil, fmt.Errorf("%w: archive over %d bytes", ErrTooLarge, lim.MaxCompressed)
		}
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	var b Bundle
	seen := map[string]bool{}
	var total int64
	var haveManifest bool
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if cr.over {
				return nil, fmt.Errorf("%w: archive over %d bytes", ErrTooLarge, lim.MaxCompressed)
			}
			return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		if n >= lim.MaxFiles {
			return nil, fmt.Errorf("%w: more than %d entries", ErrTooLarge, lim.MaxFiles)
		}
		if hdr.Typeflag == tar.TypeDir {
			continue
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("%w: %q is not a regular file", ErrUnsafeEntry, hdr.Name)
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return nil, err
		}
		if seen[name] {
			return nil, fmt.Errorf("%w: %q appears twice", ErrUnsafeEntry, name)
		}
		seen[name] = true
		if hdr.Size < 0 || total+hdr.Size > lim.MaxUncompressed {
			return nil, fmt.Errorf("%w: files over %d bytes uncompressed", ErrTooLarge, lim.MaxUncompressed)
		}
		data, err := io.ReadAll(io.LimitReader(tr, hdr.Size+1))
		if err != nil {
			if cr.over {
				return nil, fmt.Errorf("%w: archive over %d bytes", ErrTooLarge, lim.MaxCompressed)
			}
			return nil, fmt.Errorf("%w: reading %q: %v", ErrCorrupt, name, err)
		}
		if int64(len(data)) != hdr.Size {
			return nil, fmt.Errorf("%w: %q is shorter or longer than its header says", ErrCorrupt, name)
		}
		total += hdr.Size
		switch {
		case name == ManifestFile:
			haveManifest = true
			if err := json.Unmarshal(data, &b.Manifest); err != nil {
				return nil, fmt.Errorf("%w: manifest: %v", ErrInvalid, err)
			}
		case name == WasmFile:
			b.Wasm = data
		case name == DataFile:
			b.Data = data
		case name == RegoFile:
			b.Rego = data
		case strings.HasPrefix(name, SourcesDir):
			b.Sources = append(b.Sources, File{strings.TrimPrefix(name, SourcesDir), data})
		}
	}
	// Drain the gzip trailer so that its checksum is verified.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		if cr.over {
			return nil, fmt.Errorf("%w: archive over %d bytes", ErrTooLarge, lim.MaxCompressed)
		}
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if !haveManifest {
		return nil, fmt.Errorf("%w: no %s", ErrInvalid, ManifestFile)
	}
	if b.Wasm == nil {
		return nil, fmt.Errorf("%w: no %s", ErrInvalid, WasmFile)
	}
	if err := b.Manifest.check(); err != nil {
		return nil, err
	}
	return &b, nil
}

func (m *Manifest) check() error {
	for _, w := range m.Wasm {
		if w.Entrypoint == Entrypoint {
			if w.Module != WasmFile {
				return fmt.Errorf("%w: entrypoint %s is in module %q, want %s", ErrInvalid, Entrypoint, w.Module, WasmFile)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: manifest has no wasm entrypoint %s", ErrInvalid, Entrypoint)
}

// cleanName turns a tar entry name into "/a/b", refusing absolute paths
// outside the bundle root and ".." elements.
func cleanName(name string) (string, error) {
	if name == "" || strings.ContainsRune(name, 0) || strings.Contains(name, `\`) {
		return "", fmt.Errorf("%w: bad name %q", ErrUnsafeEntry, name)
	}
	trimmed := strings.TrimPrefix(name, "./")
	if strings.HasPrefix(trimmed, "/") {
		// OPA writes "/policy.wasm"; only that form of absolute path is
		// accepted, and it is relative to the bundle root.
		trimmed = trimmed[1:]
	}
	for _, el := range strings.Split(trimmed, "/") {
		if el == ".." {
			return "", fmt.Errorf("%w: %q has a \"..\" element", ErrUnsafeEntry, name)
		}
	}
	if strings.HasPrefix(trimmed, "/") || path.Clean("/"+trimmed) != "/"+trimmed {
		return "", fmt.Errorf("%w: %q is not a clean relative path", ErrUnsafeEntry, name)
	}
	return "/" + trimmed, nil
}

type countingReader struct {
	r    io.Reader
	left int64
	over bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		// One byte more than allowed tells a full-size archive from a larger one.
		var one [1]byte
		n, _ := c.r.Read(one[:])
		if n > 0 {
			c.over = true
			return 0, ErrTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// Digest returns the sha256 digest ("sha256:…") of a bundle's bytes.
func Digest(b []byte) string { return "sha256:" + SHA256Hex(b) }

// ReadBytes is [Read] over a byte slice.
func ReadBytes(b []byte, lim Limits) (*Bundle, error) { return Read(bytes.NewReader(b), lim) }
