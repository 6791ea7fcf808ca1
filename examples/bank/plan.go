package bank

import (
	"github.com/jetsaga/jetsaga/orchestrator"
	"github.com/jetsaga/jetsaga/participants"
)

// The participant names of the two banks of the example.
const (
	BankA = "bank-a"
	BankB = "bank-b"
)

// TransferPlan is the transfer saga: debit amount from user from at bank-a
// (TransOut, compensated by crediting it back), then credit it to user to at
// bank-b (TransIn, compensated by debiting it back). id "" lets the client
// choose a UUIDv7. opts apply to both steps (e.g. orchestrator.Timeout).
func TransferPlan(id string, from, to int64, amount Cents, opts ...orchestrator.StepOption) *orchestrator.Plan {
	p := orchestrator.NewPlan("transfer").
		Input(map[string]any{"from": from, "to": to, "amount": amount}).
		Step("debit", BankA, TransOut, TransOut+participants.CompensationSuffix, TransferReq{UserID: from, Amount: amount}, opts...).
		Step("credit", BankB, TransIn, TransIn+participants.CompensationSuffix, TransferReq{UserID: to, Amount: amount}, opts...)
	if id != "" {
		p.ID(id)
	}
	return p
}
