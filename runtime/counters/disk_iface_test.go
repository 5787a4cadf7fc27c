package counters_test

import (
	"github.com/toolgate/toolgate/runtime/counters"
	"github.com/toolgate/toolgate/runtime/proxy"
)

var _ proxy.Counters = (*counters.Disk)(nil)
