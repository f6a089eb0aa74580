// The host side of a transformation, evaluated once per context before the user's module.
//
// It defines the `log` (and `console`) globals and one frozen, non-writable global,
// `__tideway`, that Rust calls once per event (`event`) or once per batch (`batch`). Each call
// returns a record:
//
//   [0, [event, ...], logs]           events out (an empty array: dropped)
//   [0, [event, ...], logs, owners]   transformBatch: the input index each event belongs to
//   [1, error, logs]                  error = {k: "thrown", name, message, stack}
//                                             | {k: "bad", f: "transformEvent", what}
//                                             | {k: "oom"}
//   [2, null, null]                   the entry point returned a promise: Rust runs the job
//                                     queue, then calls `settle()` for the final record
//
// where logs is null or the lines `log` wrote during the call. A throw is caught here; the
// only thing that unwinds past this file is the host's (uncatchable) interrupt on timeout.
(function (global) {
  "use strict";
  const stringify = JSON.stringify;
  const isArray = Array.isArray;
  const keys = Object.keys;
  const define = Object.defineProperty;
  const setPrototypeOf = Object.setPrototypeOf;
  const hasOwn = Object.prototype.hasOwnProperty;
  const NativePromise = Promise;
  const NativeMap = Map;

  let logs = [];
  let transformEvent = null;
  let transformBatch = null;
  let entry = "transformEvent";
  let pending = null;
  let owner = null;

  function text(v) {
    if (typeof v === "string") return v;
    try {
      const s = stringify(v);
      return s === undefined ? String(v) : s;
    } catch (e) {
      return String(v);
    }
  }

  function log(...args) {
    logs.push(args.map(text).join(" "));
  }
  define(global, "log", { value: log, writable: true, configurable: true });
  define(global, "console", {
    value: { log, info: log, warn: log, error: log, debug: log },
    writable: true,
    configurable: true,
  });

  function takeLogs() {
    const l = logs.length ? logs : null;
    logs = [];
    return l;
  }

  // RudderStack's `metadata` is a function of the event. Ours is that function with the
  // metadata object as its prototype, so `metadata.sourceId` reads the field too (copying the
  // fields onto a fresh function per event costs five times as much).
  function metadataFn(lookup, m) {
    const f = function metadata(event) {
      return lookup(event);
    };
    if (m !== null && typeof m === "object") {
      setPrototypeOf(f, m);
      if (hasOwn.call(m, "name")) delete f.name;
      if (hasOwn.call(m, "length")) delete f.length;
    }
    return f;
  }

  function describe(v) {
    if (v === null) return "null";
    if (isArray(v)) return "an array";
    switch (typeof v) {
      case "number":
        return "a number (" + v + ")";
      case "string":
        return "a string (" + stringify(v.length > 40 ? v.slice(0, 40) + "..." : v) + ")";
      case "boolean":
        return "a boolean (" + v + ")";
      case "bigint":
        return "a bigint (" + v + "n)";
      case "function":
        return "a function";
      case "symbol":
        return "a symbol";
      default:
        return "an object";
    }
  }

  function thrown(e) {
    if (e !== null && typeof e === "object" && typeof e.message === "string") {
      if (e.name === "InternalError" && e.message === "out of memory") return { k: "oom" };
      return {
        k: "thrown",
        name: typeof e.name === "string" ? e.name : "Error",
        message: e.message,
        stack: typeof e.stack === "string" ? e.stack : "",
      };
    }
    const shown = typeof e === "string" ? stringify(e) : text(e);
    return { k: "thrown", name: "", message: "uncaught exception: " + shown, stack: "" };
  }

  // The record for what the entry point returned.
  function done(r) {
    let events;
    if (r === null || r === undefined) {
      events = [];
    } else if (isArray(r)) {
      events = [];
      for (let j = 0; j < r.length; j++) {
        const v = r[j];
        if (v === null || v === undefined) continue;
        if (typeof v !== "object" || isArray(v)) {
          const what = "an array whose item " + j + " is " + describe(v);
          return [1, { k: "bad", f: entry, what }, takeLogs()];
        }
        events.push(v);
      }
    } else if (typeof r === "object") {
      events = [r];
    } else {
      return [1, { k: "bad", f: entry, what: describe(r) }, takeLogs()];
    }
    if (owner === null) return [0, events, takeLogs()];
    return [0, events, takeLogs(), events.map(owner)];
  }

  function settled(r) {
    if (r instanceof NativePromise) {
      const p = { done: false, value: undefined, error: undefined, failed: false };
      pending = p;
      r.then(
        (v) => { p.done = true; p.value = v; },
        (e) => { p.done = true; p.failed = true; p.error = e; },
      );
      return [2, null, null];
    }
    return done(r);
  }

  const host = {
    // Keeps the module's entry points; returns "event", "batch" or null (neither exported).
    install(ns) {
      if (typeof ns.transformEvent === "function") transformEvent = ns.transformEvent;
      if (typeof ns.transformBatch === "function") transformBatch = ns.transformBatch;
      if (!transformEvent && transformBatch) entry = "transformBatch";
      return transformEvent ? "event" : transformBatch ? "batch" : null;
    },
    event(ev, m) {
      logs = [];
      pending = null;
      owner = null;
      try {
        return settled(transformEvent(ev, metadataFn(() => m, m)));
      } catch (e) {
        return [1, thrown(e), takeLogs()];
      }
    },
    batch(evs, metas) {
      logs = [];
      pending = null;
      // Which input an output event belongs to: the same object, else the same messageId.
      const byEvent = new NativeMap();
      const byId = new NativeMap();
      for (let j = 0; j < evs.length; j++) {
        const ev = evs[j];
        byEvent.set(ev, j);
        if (ev !== null && typeof ev === "object" && ev.messageId !== undefined && !byId.has(ev.messageId)) {
          byId.set(ev.messageId, j);
        }
      }
      owner = (ev) => {
        if (byEvent.has(ev)) return byEvent.get(ev);
        if (ev !== null && typeof ev === "object" && byId.has(ev.messageId)) return byId.get(ev.messageId);
        return 0;
      };
      try {
        return settled(transformBatch(evs, metadataFn((ev) => metas[owner(ev)], metas[0])));
      } catch (e) {
        return [1, thrown(e), takeLogs()];
      }
    },
    // The record of the promise the last call returned, once the job queue has run dry.
    settle() {
      const p = pending;
      pending = null;
      if (p === null || !p.done) {
        return [1, { k: "bad", f: entry, what: "a promise that never settled" }, takeLogs()];
      }
      if (p.failed) return [1, thrown(p.error), takeLogs()];
      return done(p.value);
    },
  };
  define(global, "__tideway", { value: Object.freeze(host) });
})(globalThis);
