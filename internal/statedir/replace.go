package statedir

import (
	"os"
	"path/filepath"
)

// WriteFile replaces path with data, whole or not at all: it writes a
// temporary file in the same folder, gives it the mode of the file it
// replaces (newMode when there is none), fsyncs it, renames it over path
// and syncs the folder. A failure leaves path as it was and removes the
// temporary file.
func WriteFile(path string, data []byte, newMode os.FileMode) error {
	mode := newMode
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return err
	}
	Sync(dir)
	return nil
}
