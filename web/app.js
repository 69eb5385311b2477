// omni-rtc web client: plain JavaScript, no build step. Works in Chromium and Firefox.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  // ?processing=0 turns off echo cancellation, noise suppression and AGC (tests, studio mics)
  const audioProcessing = params.get("processing") !== "0";

  const ui = {
    call: $("call"), hangup: $("hangup"), ptt: $("ptt"), options: $("options"),
    voice: $("voice"), instructions: $("instructions"), camera: $("camera"),
    preview: $("preview"), noCamera: $("no-camera"), micLevel: $("mic-level"),
    remoteAudio: $("remote-audio"), turns: $("turns"), model: $("model"),
    connection: $("connection"), state: $("state"), modeChip: $("mode"), error: $("error"),
    errorText: $("error-text"), errorClose: $("error-close"), notice: $("notice"),
  };

  // A small debug handle (also used by the browser tests): events seen, remote audio level.
  const debug = (window.omni = {
    pc: null, callId: null, events: [], remoteLevels: [], config: null, pttDown: false,
  });

  let config = null;
  let pc = null;
  let channel = null;
  let localStream = null;
  let audioContext = null;
  let meterTimer = null;
  let remoteTimer = null;
  let currentAssistant = null;
  let mode = "server_vad";
  let speaking = false;
  let everConnected = false;
  let heartbeatTimer = null;
  let lastHeard = 0;
  let ended = false;

  // Why a call ended, in words a caller understands (the server's "ended" reasons).
  const ENDED = {
    hangup: "",
    server_shutdown: "The server shut down, so the call ended.",
    max_duration: "The call reached its time limit.",
    idle: "The call ended because nobody spoke for a while.",
    upstream_closed: "The model service was lost and could not be reached again.",
    upstream_auth: "The model service rejected the server's API key.",
    upstream_unavailable: "The model service is unavailable right now.",
    peer_failed: "The media connection was lost.",
    peer_timeout: "The media connection could not be set up: the network between you and the server blocks WebRTC. A TURN server (see README) fixes this.",
    internal_error: "The server hit an internal error and ended the call.",
  };
  const SERVER_SILENT_MS = 1200;  // no pong and no reply packet this long: the server is gone

  // ------------------------------------------------------------------ access (call links)
  // The one place that knows about tokens: ?token=... (a call link from `omni-rtc token`,
  // or the access token) goes to the server as a Bearer header on every API request.
  const accessToken = params.get("token");

  function authHeaders(extra = {}) {
    return accessToken ? { ...extra, Authorization: `Bearer ${accessToken}` } : extra;
  }

  function refusalMessage(status, body) {
    if (status === 401) {
      return accessToken ? "This call link is invalid or has expired." : "This server needs a call link: open the link you were given.";
    }
    return body.error || `the server refused the call (HTTP ${status})`;
  }

  // ------------------------------------------------------------------ UI helpers

  function showError(message) {
    ui.errorText.textContent = message;
    ui.error.hidden = false;
  }

  function clearError() {
    ui.error.hidden = true;
    ui.errorText.textContent = "";
  }

  function showNotice(message) {
    ui.notice.textContent = message;
    ui.notice.hidden = !message;
  }

  function setChip(el, value, text) {
    el.dataset.value = value;
    el.textContent = text || value;
  }

  function addTurn(role, text, final) {
    let li;
    if (role === "assistant" && currentAssistant && !currentAssistant.dataset.final) {
      li = currentAssistant;
    } else {
      li = document.createElement("li");
      li.className = role;
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = role === "user" ? "You" : "Model";
      li.appendChild(who);
      li.appendChild(document.createElement("span"));
      ui.turns.appendChild(li);
      if (role === "assistant") currentAssistant = li;
    }
    li.lastChild.textContent = text;
    li.classList.toggle("partial", !final);
    if (final && role === "assistant") li.dataset.final = "1";
    li.parentElement.parentElement.scrollTop = li.parentElement.scrollHeight;
  }

  function markInterrupted() {
    // The transcript may be complete while its audio still plays: mark what was cut.
    if (currentAssistant && (speaking || !currentAssistant.dataset.final)) {
      currentAssistant.classList.add("interrupted");
      currentAssistant.dataset.final = "1";
    }
  }

  function addDivider() {
    if (!ui.turns.children.length) return;
    const li = document.createElement("li");
    li.className = "divider";
    li.textContent = `new call · ${new Date().toLocaleTimeString()}`;
    ui.turns.appendChild(li);
    currentAssistant = null;
  }

  // A failed request to the server, told apart from the browser refusing something
  // (a TypeError too, but not "cannot reach").
  class FetchFailed extends Error {
    constructor(cause) { super(String(cause)); this.name = "FetchFailed"; this.cause = cause; }
  }

  // The server answered no; its reason is already worded for the caller.
  class Refused extends Error {
    constructor(message) { super(message); this.name = "Refused"; }
  }

  function describeCallError(err) {
    if (err instanceof Refused) return err.message;
    if (err && err.name === "NotAllowedError") return "Microphone or camera access was refused: allow it in the browser and call again.";
    if (err && err.name === "NotFoundError") return "No microphone found.";
    return `The browser could not start the call: ${err && err.name ? `${err.name}: ` : ""}${(err && err.message) || err}`;
  }

  function describeFetchError(err) {
    // fetch() rejects with a TypeError ("Failed to fetch") when nothing answers
    if (err instanceof TypeError) return "Cannot reach the omni-rtc server: is it running, and is the network up?";
    if (err && err.name === "TimeoutError") return "The omni-rtc server did not answer in time: try again.";
    return err.message || String(err);
  }

  function setCallUi(active) {
    ui.call.disabled = active;
    ui.hangup.disabled = !active;
    ui.options.disabled = active;
    ui.ptt.hidden = !(active && mode === "manual");
    ui.ptt.disabled = !active;
    ui.modeChip.hidden = !active;
    ui.modeChip.textContent = mode === "manual" ? "push-to-talk" : "hands-free";
  }

  // ------------------------------------------------------------------ configuration

  async function loadConfig() {
    const response = await fetch("config", { headers: authHeaders() });
    if (!response.ok) throw new Error(`cannot load /config (HTTP ${response.status})`);
    config = await response.json();
    debug.config = config;
    ui.model.textContent = config.emulator ? `${config.model} · emulator` : config.model;
    ui.voice.replaceChildren(...config.voices.map((v) => new Option(v, v, false, v === config.default_voice)));
    ui.instructions.value = config.instructions || "";
    const defaultMode = params.get("mode") || config.default_mode;
    for (const radio of document.querySelectorAll("input[name=mode]")) {
      radio.checked = radio.value === defaultMode;
    }
    if (!config.video.enabled) {
      ui.camera.checked = false;
      ui.camera.disabled = true;
    }
    if (config.emulator) {
      showNotice("Offline mode: the server runs its built-in emulator, which echoes what you say. Set an API key on the server to talk to the real model.");
    }
    if (config.auth_required && !config.authorized) {
      // say it now, not after the caller pressed Call and allowed the microphone
      showError(refusalMessage(401, {}));
    }
  }

  // ------------------------------------------------------------------ media

  async function getMedia(wantCamera) {
    const audio = { echoCancellation: audioProcessing, noiseSuppression: audioProcessing, autoGainControl: audioProcessing, channelCount: 1 };
    const video = wantCamera ? {
      // The model takes at most 2 frames/s: ask for little, save everyone's CPU.
      width: { ideal: 640, max: config.video.max_width },
      height: { ideal: 480, max: config.video.max_height },
      frameRate: { ideal: 5, max: 10 },
    } : false;
    try {
      return await navigator.mediaDevices.getUserMedia({ audio, video });
    } catch (err) {
      if (wantCamera && (err.name === "NotFoundError" || err.name === "NotAllowedError" || err.name === "OverconstrainedError")) {
        showNotice("No camera available: calling with audio only.");
        return await navigator.mediaDevices.getUserMedia({ audio, video: false });
      }
      throw err;
    }
  }

  // Calls onLevel(rms) every intervalMs with the RMS level of a stream (0..1).
  function sampleLevel(stream, fftSize, intervalMs, onLevel) {
    audioContext = audioContext || new AudioContext();
    const analyser = audioContext.createAnalyser();
    analyser.fftSize = fftSize;
    audioContext.createMediaStreamSource(stream).connect(analyser);
    const data = new Float32Array(analyser.fftSize);
    return setInterval(() => {
      analyser.getFloatTimeDomainData(data);
      let sum = 0;
      for (const x of data) sum += x * x;
      onLevel(Math.sqrt(sum / data.length));
    }, intervalMs);
  }

  function startMicMeter(stream) {
    meterTimer = sampleLevel(stream, 512, 60, (rms) => {
      const level = Math.min(1, Math.max(0, (20 * Math.log10(rms + 1e-9) + 60) / 60));
      ui.micLevel.style.width = `${Math.round(level * 100)}%`;
    });
  }

  function watchRemoteAudio(stream) {
    // What the caller hears, for the debug handle (and the barge-in test).
    remoteTimer = sampleLevel(stream, 256, 10, (rms) => {
      debug.remoteLevels.push([performance.now(), rms]);
      if (debug.remoteLevels.length > 6000) debug.remoteLevels.splice(0, 1000);
    });
  }

  // ------------------------------------------------------------------ signaling

  function waitForIceGathering(peer, timeoutMs) {
    if (peer.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      peer.addEventListener("icegatheringstatechange", () => {
        if (peer.iceGatheringState === "complete") {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  async function startCall() {
    clearError();
    showNotice("");
    addDivider();
    ended = false;
    everConnected = false;
    mode = document.querySelector("input[name=mode]:checked").value;
    setCallUi(true);
    setChip(ui.connection, "connecting", "asking for microphone…");
    try {
      localStream = await getMedia(ui.camera.checked);
      const videoTrack = localStream.getVideoTracks()[0];
      ui.preview.srcObject = videoTrack ? new MediaStream([videoTrack]) : null;
      ui.noCamera.hidden = Boolean(videoTrack);
      startMicMeter(localStream);

      pc = new RTCPeerConnection({ iceServers: config.ice_servers, iceTransportPolicy: params.get("relay") === "1" ? "relay" : config.ice_transport_policy });
      debug.pc = pc;
      channel = pc.createDataChannel("events");
      channel.onmessage = (e) => onServerMessage(e.data);
      channel.onopen = startHeartbeat;
      for (const track of localStream.getTracks()) {
        const sender = pc.addTrack(track, localStream);
        if (track.kind === "video") limitVideo(sender);
      }
      pc.ontrack = (e) => {
        if (e.track.kind !== "audio") return;
        const stream = e.streams[0] || new MediaStream([e.track]);
        ui.remoteAudio.srcObject = stream;
        ui.remoteAudio.play().catch(() => {});
        watchRemoteAudio(stream);
      };
      pc.onconnectionstatechange = () => {
        const s = pc ? pc.connectionState : "closed";
        setChip(ui.connection, s, s === "connected" ? "connected" : s);
        if (s === "connected") everConnected = true;
        if (s === "failed" && !ended) {
          showError(everConnected ? ENDED.peer_failed : ENDED.peer_timeout);
          endCall(false);
        }
      };

      setChip(ui.connection, "connecting", "connecting…");
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIceGathering(pc, 3000);
      const response = await fetch("offer", {
        signal: AbortSignal.timeout(20000),
        method: "POST",
        headers: authHeaders({ "Content-Type": "application/json" }),
        body: JSON.stringify({
          sdp: pc.localDescription.sdp, type: "offer", mode,
          voice: ui.voice.value || undefined, instructions: ui.instructions.value.trim() || undefined,
        }),
      }).catch((err) => { throw new FetchFailed(err); });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw new Refused(refusalMessage(response.status, body));
      debug.callId = body.call_id;
      await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
    } catch (err) {
      console.error("call failed:", err instanceof FetchFailed ? err.cause : err);
      showError(err instanceof FetchFailed ? describeFetchError(err.cause) : describeCallError(err));
      endCall(false);
    }
  }

  // ------------------------------------------------------------------ heartbeat

  // The page pings; the server answers. With the reply audio's RTP packets that tells,
  // within SERVER_SILENT_MS (+ one 200 ms tick), that the server vanished (crashed, killed, network gone),
  // long before ICE would notice; the server in turn fails a silent page in seconds.
  function startHeartbeat() {
    lastHeard = performance.now();
    clearInterval(heartbeatTimer);
    heartbeatTimer = setInterval(async () => {
      if (!pc || !channel) return;
      if (channel.readyState === "open") channel.send(JSON.stringify({ type: "ping" }));
      let rtpSilentMs = Infinity;
      try {
        const stats = await pc.getStats();
        stats.forEach((s) => {
          if (s.type === "inbound-rtp" && s.kind === "audio" && s.lastPacketReceivedTimestamp) {
            rtpSilentMs = Math.min(rtpSilentMs, s.timestamp - s.lastPacketReceivedTimestamp);
          }
        });
      } catch { /* closed meanwhile */ }
      const silentMs = Math.min(rtpSilentMs, performance.now() - lastHeard);
      if (!ended && silentMs > SERVER_SILENT_MS) {
        showError("Lost contact with the server: it stopped, or the network between you dropped.");
        endCall(false);
      }
    }, 200);
  }

  function limitVideo(sender) {
    // Cap what the browser encodes: the model samples at most 2 frames per second.
    const parameters = sender.getParameters();
    if (!parameters.encodings || !parameters.encodings.length) parameters.encodings = [{}];
    parameters.encodings[0].maxFramerate = 5;
    parameters.encodings[0].maxBitrate = 500_000;
    sender.setParameters(parameters).catch(() => {});
  }

  function onServerMessage(text) {
    let msg;
    try { msg = JSON.parse(text); } catch { return; }
    lastHeard = performance.now();
    if (msg.type === "pong") return;
    debug.events.push([performance.now(), msg]);
    switch (msg.type) {
      case "transcript": addTurn(msg.role, msg.text, msg.final); break;
      case "state":
        speaking = msg.value === "speaking";
        setChip(ui.state, msg.value);
        break;
      case "interrupted": markInterrupted(); break;
      case "error": showError(msg.message); break;
      case "notice": showNotice(msg.message); break;
      case "ended": {
        ended = true;
        setChip(ui.state, "ended");
        const why = msg.reason in ENDED ? ENDED[msg.reason] : `The call ended (${msg.reason}).`;
        if (why) showError(why);
        if (msg.reason !== "hangup") endCall(false);
        break;
      }
      case "call": mode = msg.mode; setCallUi(true); break;
      default: break;
    }
  }

  function endCall(notifyServer) {
    const callId = debug.callId;
    if (notifyServer && callId) {
      fetch(`calls/${encodeURIComponent(callId)}`, { method: "DELETE", keepalive: true, headers: authHeaders() }).catch(() => {});
    }
    debug.callId = null;
    ended = true;
    speaking = false;
    clearInterval(meterTimer);
    clearInterval(remoteTimer);
    clearInterval(heartbeatTimer);
    if (channel) { try { channel.close(); } catch { /* already closed */ } }
    if (pc) { pc.close(); }
    pc = null;
    channel = null;
    if (localStream) for (const t of localStream.getTracks()) t.stop();
    localStream = null;
    ui.preview.srcObject = null;
    ui.micLevel.style.width = "0";
    setChip(ui.connection, "idle", "not connected");
    if (ui.state.dataset.value !== "ended") setChip(ui.state, "idle");
    setCallUi(false);
  }

  // ------------------------------------------------------------------ push-to-talk

  function ptt(down) {
    if (mode !== "manual" || !channel || channel.readyState !== "open" || debug.pttDown === down) return;
    debug.pttDown = down;
    ui.ptt.classList.toggle("active", down);
    channel.send(JSON.stringify({ type: "ptt", action: down ? "start" : "stop" }));
  }

  ui.ptt.addEventListener("pointerdown", (e) => { e.preventDefault(); ptt(true); });
  ui.ptt.addEventListener("pointerup", () => ptt(false));
  ui.ptt.addEventListener("pointerleave", () => ptt(false));
  const typing = () => ["TEXTAREA", "SELECT", "INPUT"].includes(document.activeElement?.tagName);
  document.addEventListener("keydown", (e) => {
    if (e.code === "Space" && !e.repeat && !typing() && mode === "manual" && pc) { e.preventDefault(); ptt(true); }
  });
  document.addEventListener("keyup", (e) => {
    if (e.code === "Space" && !typing() && mode === "manual" && pc) { e.preventDefault(); ptt(false); }
  });

  // ------------------------------------------------------------------ start

  ui.call.addEventListener("click", () => { if (audioContext) audioContext.resume(); startCall(); });
  ui.hangup.addEventListener("click", () => endCall(true));
  ui.errorClose.addEventListener("click", clearError);
  window.addEventListener("pagehide", () => endCall(true));

  loadConfig().catch((err) => {
    showError(err instanceof TypeError ? describeFetchError(err) : `${err.message}. Is the omni-rtc server running?`);
    ui.call.disabled = true;
  });
})();
