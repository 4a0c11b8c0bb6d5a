// callgate demo: the browser phone. It plays Twilio's part for one caller: dials, follows the
// menu's steps (reading prompts aloud), sends keypad digits, and during the agent part streams
// the microphone as 20 ms μ-law frames at 8 kHz and plays the agent's μ-law audio back.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const app = $("phone-app");
  const statusEl = $("status");
  const heard = $("heard");
  const keypad = $("keypad");
  const typedEl = $("typed");
  const talk = $("talk");
  const callBtn = $("call");
  const hangupBtn = $("hangup");
  const meter = $("meter");
  const from = "+1555" + String(Math.floor(1000000 + Math.random() * 8999999));

  let call = null;
  let audio = null;
  let ws = null;
  let keyWaiter = null;
  let mic = null;
  let micSamples = [];
  let playAt = 0;
  const sources = new Set();
  // The agent part's clock: the allowance when it began, and overage's terms.
  let account = null;
  let meterTimer = null;
  let pendingClear = null;

  const clock = (s) => Math.floor(s / 60) + ":" + String(Math.floor(s % 60)).padStart(2, "0");

  function startMeter(info) {
    account = Object.assign({ started: performance.now(), overageNoted: false }, info);
    meter.hidden = false;
    meter.className = "meter";
    const tickMs = (info.tick || 1) * 1000;
    const update = () => {
      const talked = (performance.now() - account.started) / tickMs;
      $("talked").textContent = clock(talked);
      const left = account.secondsLeft - talked;
      if (left > 0) {
        $("left").textContent = clock(left) + " left";
      } else if (account.overage) {
        meter.className = "meter overage";
        $("left").textContent = "overage " + clock(-left) + " at " + account.overagePrice + " a minute";
        if (!account.overageNoted) {
          account.overageNoted = true;
          note("Your included minutes are used up: extra minutes now cost " + account.overagePrice +
               " each, charged after the call.", "overage");
        }
      } else {
        $("left").textContent = "no minutes left";
      }
    };
    update();
    clearInterval(meterTimer);
    meterTimer = setInterval(update, 250);
  }

  function stopMeter() {
    clearInterval(meterTimer);
    meterTimer = null;
  }

  function setState(state, text) {
    app.dataset.state = state;
    if (text) statusEl.textContent = text;
  }

  // The newest line stays in view, also when the page is resized.

  function note(text, cls) {
    const li = document.createElement("li");
    li.textContent = text;
    if (cls) li.className = cls;
    heard.appendChild(li);
    li.scrollIntoView({ block: "nearest" });
  }

  function speak(text) {
    try {
      if (window.speechSynthesis) window.speechSynthesis.speak(new SpeechSynthesisUtterance(text));
    } catch (e) { /* no speech here: the text is on screen */ }
  }

  const wait = (ms) => new Promise((r) => setTimeout(r, ms));

  async function post(path, body) {
    const resp = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const out = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(out.error || "HTTP " + resp.status);
    return out;
  }

  // G.711 μ-law, as Twilio and the agent carry it.
  function ulawEncode(sample) {
    const BIAS = 0x84, CLIP = 32635;
    const sign = sample < 0 ? 0x80 : 0;
    if (sign) sample = -sample;
    if (sample > CLIP) sample = CLIP;
    sample += BIAS;
    let exponent = 7;
    for (let mask = 0x4000; (sample & mask) === 0 && exponent > 0; mask >>= 1) exponent--;
    const mantissa = (sample >> (exponent + 3)) & 0x0f;
    return ~(sign | (exponent << 4) | mantissa) & 0xff;
  }

  function ulawDecode(u) {
    u = ~u & 0xff;
    const exponent = (u >> 4) & 7;
    const t = (((u & 0x0f) << 3) + 0x84) << exponent;
    return u & 0x80 ? 0x84 - t : t - 0x84;
  }

  function toBase64(bytes) {
    let s = "";
    for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
    return btoa(s);
  }

  function fromBase64(text) {
    const s = atob(text);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }

  function play(bytes) {
    if (!audio || bytes.length === 0) return;
    const buffer = audio.createBuffer(1, bytes.length, 8000);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < bytes.length; i++) channel[i] = ulawDecode(bytes[i]) / 32768;
    const src = audio.createBufferSource();
    src.buffer = buffer;
    src.connect(audio.destination);
    const at = Math.max(audio.currentTime, playAt);
    src.start(at);
    playAt = at + buffer.duration;
    sources.add(src);
    src.onended = () => sources.delete(src);
  }

  function clearPlayback() {
    for (const s of sources) { try { s.stop(); } catch (e) { /* already ended */ } }
    sources.clear();
    playAt = 0;
  }

  async function startMic() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return false;
    try {
      const stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true },
      });
      const source = audio.createMediaStreamSource(stream);
      const proc = audio.createScriptProcessor(2048, 1, 1);
      const ratio = audio.sampleRate / 8000;
      let pos = 0;
      proc.onaudioprocess = (e) => {
        // Down to 8 kHz, averaging each output sample's span (a crude low-pass).
        const input = e.inputBuffer.getChannelData(0);
        for (; pos + ratio <= input.length; pos += ratio) {
          let sum = 0, n = 0;
          for (let i = Math.floor(pos); i < Math.floor(pos + ratio); i++) { sum += input[i]; n++; }
          const s = Math.max(-1, Math.min(1, n ? sum / n : 0));
          micSamples.push(Math.round(s * 32767));
        }
        pos -= input.length;
        if (pos < 0) pos = 0;
        if (micSamples.length > 8000) micSamples = micSamples.slice(-8000);
      };
      const mute = audio.createGain();
      mute.gain.value = 0;
      source.connect(proc);
      proc.connect(mute);
      mute.connect(audio.destination);
      mic = { stream, nodes: [source, proc, mute] };
      return true;
    } catch (e) {
      return false;
    }
  }

  function stopMic() {
    if (!mic) return;
    mic.stream.getTracks().forEach((t) => t.stop());
    mic.nodes.forEach((n) => n.disconnect());
    mic = null;
    micSamples = [];
  }

  function sendFrame() {
    const frame = new Uint8Array(160);
    const samples = micSamples.splice(0, 160);
    for (let i = 0; i < 160; i++) frame[i] = ulawEncode(i < samples.length ? samples[i] : 0);
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ event: "media", payload: toBase64(frame) }));
    }
  }

  function openStream(step) {
    return new Promise((resolve) => {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      ws = new WebSocket(scheme + location.host + "/demo/phone/media");
      let timer = null;
      let withMic = false;
      ws.onopen = async () => {
        ws.send(JSON.stringify({ call_sid: call.sid, url: step.url, parameters: step.parameters }));
        withMic = await startMic();
        talk.hidden = false;
        // Keys pressed during the conversation go to callgate as Twilio sends them (dtmf).
        keypad.classList.add("live");
        setState("connected", withMic
          ? "Connected to the agent. Talk, or type below."
          : "Connected to the agent. No microphone here: type below.");
        // Twilio sends a frame every 20 ms, speech or silence.
        const started = performance.now();
        let sent = 0;
        timer = setInterval(() => {
          const due = Math.floor((performance.now() - started) / 20);
          if (due - sent > 50) sent = due - 50;
          while (sent < due) { sendFrame(); sent++; }
        }, 20);
      };
      ws.onmessage = (m) => {
        let v;
        try { v = JSON.parse(m.data); } catch (e) { return; }
        if (v.event === "media" && v.media) play(fromBase64(v.media.payload));
        else if (v.event === "clear") {
          clearPlayback();
          // callgate also clears before the one-minute warning, whose mark follows at once:
          // only a clear that no warning follows is the caller talking over the agent.
          clearTimeout(pendingClear);
          pendingClear = setTimeout(() => note("(you interrupted the agent)", "hint"), 300);
        } else if (v.event === "account") startMeter(v);
        else if (v.event === "mark" && v.mark) {
          const name = v.mark.name;
          // What callgate itself played into the call (the agent did not say it).
          const told = {
            one_minute_left: "One minute left.",
            top_up_offer: "One minute of your minutes left. Press # twice to add minutes with your saved card.",
            paid_time: "You are now in paid time, charged by the minute to your saved card.",
            top_up_confirm: "Press # again to buy more minutes.",
            top_up_added: "Your minutes have been added.",
            top_up_declined: "Your card was declined: no minutes were added.",
            top_up_confirm_online: "Your bank asks you to confirm this payment: a link to add minutes was sent to you.",
            time_left: "Callgate told you the minutes you have left.",
            per_minute: "Callgate told you the price of a minute of paid time.",
          }[name];
          if (told) {
            clearTimeout(pendingClear);
            note(told, "warning");
          }
          const ms = audio ? Math.max(0, (playAt - audio.currentTime) * 1000) : 0;
          setTimeout(() => {
            if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ event: "mark", name: name }));
          }, ms);
        } else if (v.event === "transcript") {
          note((v.speaker === "agent" ? "Agent: " : "You: ") + v.text, v.speaker);
          if (v.speaker === "agent" && !withMic) speak(v.text);
        } else if (v.event === "notice") note(v.text);
      };
      ws.onclose = () => {
        clearInterval(timer);
        stopMeter();
        stopMic();
        talk.hidden = true;
        keypad.classList.remove("live");
        ws = null;
        resolve();
      };
    });
  }

  function gather(step) {
    return new Promise((resolve) => {
      let digits = "";
      let timer = null;
      typedEl.textContent = "";
      typedEl.hidden = false;
      keypad.classList.add("live");
      // A one-key Gather is an offer (remember or forget this number): Twilio's own timeout.
      const offer = step.num_digits === 1;
      setState("gather", offer ? "Press the key you heard, or wait." : "Type your access code on the keypad, then #.");
      const finish = (result) => {
        clearTimeout(timer);
        keyWaiter = null;
        keypad.classList.remove("live");
        typedEl.hidden = true;
        typedEl.textContent = "";
        resolve(result);
      };
      // A person needs longer than Twilio's timeout to find their code: 30 s for the first key.
      const arm = (seconds) => {
        clearTimeout(timer);
        timer = setTimeout(() => finish(digits ? { digits: digits, key: "" } : null), seconds * 1000);
      };
      arm(offer ? step.timeout : Math.max(step.timeout, 30));
      keyWaiter = (key) => {
        if (step.finish_on_key.includes(key)) return finish(digits ? { digits: digits, key: key } : null);
        digits += key;
        typedEl.textContent = digits.replace(/./g, "•");
        if (digits.length >= step.num_digits) return finish({ digits: digits, key: "" });
        arm(step.timeout);
      };
    });
  }

  async function hear(step) {
    if (step.kind === "say") { note(step.text); speak(step.text); await wait(150); }
    else if (step.kind === "play") {
      note("♪ " + step.url.split("/").pop());
      try { await new Audio(step.url).play(); } catch (e) { /* shown as text */ }
      await wait(150);
    } else if (step.kind === "pause") await wait(Math.min(step.seconds, 2) * 1000);
  }

  async function next(url, extra) {
    const out = await post("/demo/phone/next", Object.assign({ call_sid: call.sid, url: url }, extra || {}));
    return out.steps;
  }

  async function run(steps) {
    for (const step of steps) {
      if (!call || call.ended) return;
      if (step.kind === "gather") {
        for (const p of step.prompts) await hear(p);
        const typed = await gather(step);
        if (typed) return run(await next(step.action, { digits: typed.digits, finished_on_key: typed.key }));
      } else if (step.kind === "redirect") {
        return run(await next(step.url));
      } else if (step.kind === "stream") {
        setState("connecting", "Connecting you to the agent…");
        await openStream(step);
        setState("menu", "The agent part has ended.");
      } else if (step.kind === "dial") {
        // The caller pressed 0: callgate hands the call to a person (Twilio <Dial>).
        setState("transfer", "Transferring you to a person…");
        note("Transferring you to " + step.number + ". A person would answer here: the demo has no operator line.", "warning");
        await wait(1500);
      } else if (step.kind === "hangup") {
        break;
      } else {
        await hear(step);
      }
    }
    await endCall("Call ended.");
  }

  async function endCall(text) {
    if (!call || call.ended) return;
    call.ended = true;
    keyWaiter = null;
    if (ws) ws.close();
    stopMic();
    clearPlayback();
    stopMeter();
    typedEl.hidden = true;
    setState("ended", text + " Working out your minutes…");
    let summary = null;
    try { summary = await post("/demo/phone/hangup", { call_sid: call.sid }); } catch (e) { /* the call is over either way */ }
    setState("ended", text + describe(summary));
    hangupBtn.hidden = true;
    callBtn.hidden = false;
    callBtn.disabled = false;
  }

  // "Talked 1:23. 0:37 left on your code. $1.00 of overage will be charged."
  function describe(s) {
    if (!s || s.talkedSeconds === undefined) return "";
    let out = " Talked " + clock(s.talkedSeconds) + ".";
    if (typeof s.secondsLeft === "number") {
      out += s.secondsLeft > 0 ? " " + clock(s.secondsLeft) + " left on your code." : " No minutes left on your code.";
    }
    if (s.charge) out += " " + s.charge + " of overage will be charged to your card.";
    if (!s.settled) out += " (Your balance updates in a moment.)";
    return out;
  }

  callBtn.addEventListener("click", async () => {
    callBtn.disabled = true;
    heard.replaceChildren();
    typedEl.textContent = "";
    meter.hidden = true;
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      if (audio.state === "suspended") await audio.resume();
    } catch (e) { audio = null; }
    setState("ringing", "Calling " + from + " → callgate…");
    try {
      const out = await post("/demo/phone/dial", { from: from });
      call = { sid: out.call_sid, ended: false };
      callBtn.hidden = true;
      hangupBtn.hidden = false;
      setState("menu", "Connected to the phone menu.");
      await run(out.steps);
    } catch (e) {
      setState("error", "The call failed: " + e.message);
      callBtn.disabled = false;
      if (call) await endCall("The call failed: " + e.message);
    }
  });

  hangupBtn.addEventListener("click", () => {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ event: "stop" }));
    endCall("You hung up.");
  });

  function press(key) {
    if (keyWaiter) keyWaiter(key);
    else if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ event: "dtmf", digit: key }));
  }

  keypad.addEventListener("click", (e) => {
    const key = e.target && e.target.dataset && e.target.dataset.key;
    if (key) press(key);
  });

  document.addEventListener("keydown", (e) => {
    if (/^[0-9*#]$/.test(e.key) && document.activeElement !== $("say")) press(e.key);
  });

  talk.addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("say");
    const text = input.value.trim();
    if (!text || !ws || ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify({ event: "text", text: text }));
    input.value = "";
  });
})();
