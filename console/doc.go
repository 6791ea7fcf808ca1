// Package console is jetsaga's web console: server-rendered pages over an
// [orchestrator.Client], for operators who would rather look than read.
//
// # Pages
//
//   - The overview: sagas by status and by name, the sagas started and ended
//     in each of the last minutes, the parked sagas first (they wait for
//     someone), the latest sagas. It refreshes itself every few seconds.
//   - The list: filters by status, name, participant and start time, search
//     by id, pages newest first. It reads an [orchestrator.Index], a live
//     in-memory index of the state bucket, so a page costs memory reads only,
//     also over hundreds of thousands of finished sagas.
//   - A saga: its facts; its plan as a picture (one box per step, coloured by
//     the step's status, arrows for the dependencies); its timeline as a
//     chart (each attempt from its command to its outcome, compensations
//     below the actions, operator actions and rejected inputs marked, timer
//     ticks as dashed lines); the steps with payloads, results and reasons;
//     every message of both streams. While the saga runs, the page follows it
//     through server-sent events.
//   - Actions on a parked saga (redrive, skip a step, resolve with a note)
//     go through a confirmation page, and are sent with the operator's
//     identity in the action's "by" field (the basic-auth user, or the name
//     the form asks for), which the saga's timeline shows.
//
// # Safety
//
// Nothing is loaded from elsewhere: templates, styles and the little
// JavaScript are embedded in the binary, and the Content-Security-Policy
// allows only the console's own. With Config.Token or Config.Users every
// request must authenticate (`jetsaga console` requires one of them when it
// listens on anything but loopback). Actions are POSTs that must carry the
// CSRF token of the confirmation form (double-submit cookie, SameSite=Strict)
// and come from the console's own origin (Sec-Fetch-Site, Origin or Referer
// checked). Config.ReadOnly hides and refuses every action.
//
//	c, err := console.New(ctx, console.Config{Client: client, Token: token})
//	if err != nil { return err }
//	defer c.Close()
//	http.ListenAndServe("127.0.0.1:8080", c)
package console
