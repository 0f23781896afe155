// The live event stream (server-sent events). EventSource cannot send headers, so the token
// goes in the query (?access_token=), as the API documents; the browser reconnects by itself
// and sends Last-Event-ID, so events missed meanwhile are replayed.

/** Event names the gateway sends (alerts and work orders). */
export const EVENT_TYPES = [
  "alert.pending",
  "alert.firing",
  "alert.repeat",
  "alert.resolved",
  "alert.acknowledged",
  "workorder.opened",
  "workorder.occurrence",
  "workorder.acknowledged",
  "workorder.escalated",
  "workorder.overdue",
  "workorder.dispatched",
  "workorder.started",
  "workorder.resolved",
  "workorder.closed",
  "workorder.reopened",
  "workorder.transition",
  "workorder.commented",
  "workorder.rated",
  "workorder.sensor_ok",
  "workorder.sensor_fault",
];

let source = null;

/**
 * Open the stream. `onEvent(type, data)` gets every event; `onState(state)` gets "open",
 * "connecting" (the browser retries) or "closed" (refused, e.g. a revoked token).
 */
export function connect(token, onEvent, onState) {
  disconnect();
  const es = new EventSource(`/events/stream?access_token=${encodeURIComponent(token)}`);
  source = es;
  onState("connecting");
  es.onopen = () => onState("open");
  es.onerror = () => onState(es.readyState === EventSource.CLOSED ? "closed" : "connecting");
  for (const type of EVENT_TYPES) {
    es.addEventListener(type, (message) => {
      let data = null;
      try {
        data = JSON.parse(message.data);
      } catch (err) {
        return; // not ours: ignore
      }
      onEvent(type, data);
    });
  }
}

/** Close the stream (sign-out). */
export function disconnect() {
  if (source) source.close();
  source = null;
}
