package policy

import (
	"strings"
	"testing"
)

// TestWarnings: quoted numbers a call's number never equals, and
// increment_from without a refusal of negative amounts, are warned of at
// their place; what compares as meant is not.
func TestWarnings(t *testing.T) {
	const src = `version: "1"
tools:
  close_account:
    rules:
      - name: protected
        conditions:
          - {path: args.account_id, op: not_in, value: ["42", "12345678"]}
      - name: exact
        conditions:
          - {path: args.code, op: eq, value: "5.0"}
          - {path: args.plain, op: eq, value: "5"}
          - {path: args.big, op: eq, value: "1e+21"}
          - {path: args.word, op: neq, value: "five"}
          - {path: args.zip, op: in, value: ["02139", "007"]}
          - {path: args.price, op: contains, value: "1.50"}
          - {path: args.n, op: eq, value: 12345678}
  refund:
    rules:
      - name: budget
        conditions:
          - {path: state.refund.spent, op: lte, value: 1000}
        state: {counter: spent, window: day, increment_from: args.amount}
      - name: guarded budget
        conditions:
          - {path: args.cents, op: gte, value: 0}
          - {path: state.refund.cents, op: lte, value: 100000}
        state: {counter: cents, window: day, increment_from: args.cents}
      - name: half guarded
        conditions:
          - {path: args.units, op: gt, value: -5}
          - {path: state.refund.units, op: lte, value: 100}
        state: {counter: units, window: day, increment_from: args.units}
  transfer:
    rules:
      - name: positive
        conditions:
          - {path: args.n, op: gt, value: 0}
      - name: transfers a day
        conditions:
          - {path: state.transfer.n, op: lte, value: 100}
        state: {counter: n, window: day, increment_from: args.n}
  payout:
    rules:
      - name: payouts a day
        conditions:
          - {path: state.payout.cents, op: lte, value: 100}
        state: {counter: cents, window: day, increment_from: args.cents}
  "pay*":
    rules:
      - name: no negative payments
        conditions:
          - {path: args.cents, op: gte, value: 0}
  "*":
    rules:
      - name: shadow guard
        mode: shadow
        conditions:
          - {path: args.total, op: gte, value: 0}
      - name: everything
        conditions:
          - {path: state._global.total, op: lte, value: 100}
        state: {counter: total, window: day, increment_from: args.total}
`
	set, diags := Load([]Source{{Path: "p/acct.yaml", Data: []byte(src)}})
	if len(diags) != 0 {
		t.Fatalf("lint: %v", diags)
	}
	var got []string
	for _, w := range Warnings(set) {
		got = append(got, w.String())
	}
	want := []string{
		`p/acct.yaml:7:13: warning: args.account_id not_in "12345678": a call's number 12345678 never equals this string (by text a number reads 1.2345678e+07); write the number without quotes to compare numbers`,
		`p/acct.yaml:10:13: warning: args.code eq "5.0": a call's number 5.0 never equals this string (by text a number reads 5); write the number without quotes to compare numbers`,
		`p/acct.yaml:19:9: warning: rule "budget": increment_from args.amount takes negative amounts too, which lower the counter; add {path: args.amount, op: gte, value: 0} to the conditions of a rule of "refund" to refuse them`,
		`p/acct.yaml:28:9: warning: rule "half guarded": increment_from args.units takes negative amounts too, which lower the counter; add {path: args.units, op: gte, value: 0} to the conditions of a rule of "refund" to refuse them`,
		`p/acct.yaml:59:9: warning: rule "everything": increment_from args.total takes negative amounts too, which lower the counter; add {path: args.total, op: gte, value: 0} to the conditions of a rule of "*" to refuse them`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
