// Colloquy web UI: plain JavaScript, no framework, only the REST API.
//
// Flow: pick or drop a file -> POST /api/upload -> follow the job live
// (GET /api/jobs/{id}/events, Server-Sent Events read with fetch so the API
// key header goes along: progress, ETA and the transcript as it is decoded),
// or poll GET /api/status/{id} every second when the stream cannot be had
// -> GET /api/results/{id} -> transcript, timeline, player.
// The player plays the local File the user picked (the server deletes audio
// when a job ends), so it is there for jobs uploaded from this page only.
'use strict';

(() => {
  // Mirrors server.allowed_extensions and server.max_upload_bytes in
  // config/default.toml; the server checks again and its message is shown.
  const ALLOWED = ['wav', 'wave', 'flac', 'mp3', 'm4a', 'mp4', 'aac', 'ogg', 'oga', 'opus', 'mka', 'mkv', 'webm', 'aif', 'aiff', 'caf'];
  const MAX_BYTES = 500 * 1024 * 1024;
  const POLL_MS = 1000;
  // Readable on the dark background (contrast >= 7:1 on #161a22).
  const COLOURS = ['#6cb6ff', '#f5a97f', '#a6da95', '#f5bde6', '#eed49f', '#8bd5ca', '#c6a0f6', '#ee99a0', '#b7bdf8', '#f0c6c6'];

  const $ = (id) => document.getElementById(id);
  const el = (tag, props = {}, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (k in e && typeof v !== 'string') e[k] = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c != null) e.append(c);
    return e;
  };

  const state = {
    file: null,              // the File chosen for the next upload
    localAudio: new Map(),   // job id -> File uploaded (or attached) in this page
    current: null,           // { id, filename, result, names, segs, turns, speakers }
    pollTimer: null,
    pollingId: null,
    stream: null,            // AbortController of the live event stream
    partials: new Map(),     // partial segment id -> { start, end, text }
    activeSeg: -1,
    activeWord: null,        // the word object highlighted now
    jobsTimer: null,
    objectUrl: null,
  };

  // ---------- formatting ----------
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  function clock(sec) {            // 1:05 or 1:02:05
    sec = Math.max(0, Math.floor(sec || 0));
    const h = Math.floor(sec / 3600), m = Math.floor((sec % 3600) / 60), s = sec % 60;
    return h ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
  }
  const clockTenths = (sec) => `${clock(sec)}.${Math.floor(((sec || 0) % 1) * 10)}`;   // 1:05.3
  function size(bytes) {
    if (bytes < 1024) return `${bytes} bytes`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  }
  const ext = (name) => (name.includes('.') ? name.split('.').pop().toLowerCase() : '');
  const stem = (name) => (name || 'transcript').replace(/\.[^.]+$/, '') || 'transcript';

  // ---------- HTTP ----------
  // The API key (servers with server.auth = "keys"), kept for this tab only.
  const KEY_STORE = 'colloquy.apiKey';
  const storedKey = () => { try { return sessionStorage.getItem(KEY_STORE) || ''; } catch (_) { return ''; } };
  function authHeaders() {
    const k = storedKey();
    return k ? { Authorization: `Bearer ${k}` } : {};
  }

  async function api(method, path) {
    const res = await fetch(path, { method, headers: { Accept: 'application/json', ...authHeaders() } });
    let body = null;
    try { body = await res.json(); } catch (_) { /* empty or not JSON */ }
    if (res.status === 401) askForKey(storedKey() ? 'This key was not accepted (unknown or revoked). Enter another one.' : '');
    return { status: res.status, body, headers: res.headers };
  }

  // A JSON request with a JSON body.
  async function apiJson(method, path, payload) {
    const res = await fetch(path, {
      method,
      headers: { Accept: 'application/json', 'Content-Type': 'application/json', ...authHeaders() },
      body: JSON.stringify(payload),
    });
    let body = null;
    try { body = await res.json(); } catch (_) { /* empty or not JSON */ }
    if (res.status === 401) askForKey('');
    return { status: res.status, body };
  }

  // Shows the key form (with `problem` when a key was refused).
  function askForKey(problem) {
    $('key-card').hidden = false;
    const err = $('key-error');
    err.textContent = problem || '';
    err.hidden = !problem;
    if (!problem) $('key-input').focus();
  }

  async function useKey(ev) {
    ev.preventDefault();
    const k = $('key-input').value.trim();
    if (!k) { askForKey('Enter a key first.'); return; }
    try { sessionStorage.setItem(KEY_STORE, k); } catch (_) { /* private mode: not kept */ }
    const r = await api('GET', '/api/jobs');
    if (r.status === 200) {
      $('key-input').value = '';
      $('key-card').hidden = true;
      $('forget-key').hidden = false;
      refreshJobs();
    }
  }

  function forgetKey() {
    try { sessionStorage.removeItem(KEY_STORE); } catch (_) { /* nothing kept */ }
    // nothing of the last key's jobs stays on the page
    stopPolling();
    state.current = null;
    $('results').hidden = true;
    $('progress').hidden = true;
    location.hash = '';
    $('forget-key').hidden = true;
    askForKey('');
    refreshJobs();
  }

  // Plain words for an upload the server refused.
  function uploadRefusal(status, body, retryAfter) {
    const msg = body && body.message ? body.message : '';
    switch (status) {
      case 400: return `The server did not accept this file. ${msg}`;
      case 401: return 'This server needs an API key: enter it above, then upload again.';
      case 403: return `The server refused the upload. ${msg}`;
      case 408: return `The upload was too slow and the server gave up. ${msg}`;
      case 413: return `This file is too large for the server. ${msg}`;
      case 429: return (body && body.error === 'queue_full')
        ? `The server is busy: too many recordings are already waiting. Try again${retryAfter ? ` in ${retryAfter} seconds` : ' in a moment'}.`
        : `Not now: ${msg || 'too many requests'}${retryAfter ? ` (try again in ${retryAfter} seconds)` : ''}.`;
      case 503: return `The server is receiving too many uploads at once. Try again${retryAfter ? ` in ${retryAfter} seconds` : ' in a moment'}.`;
      case 507: return 'The server\'s storage is full; the file was not kept. Ask its administrator to make room.';
      case 0: return 'The upload did not get through: the server closed the connection (it does that to files over its size limit) or is not running.';
      default: return `Upload failed (HTTP ${status}). ${msg}`;
    }
  }

  // ---------- upload ----------
  function checkFile(file) {
    if (!file) return 'No file was chosen.';
    const e = ext(file.name);
    if (!ALLOWED.includes(e)) {
      return `"${file.name}" is not a recording this server reads${e ? ` (.${e} files are not accepted)` : ' (it has no file extension)'}. Choose an audio (or video) file such as WAV, MP3, FLAC, M4A or OGG.`;
    }
    if (file.size === 0) return `"${file.name}" is empty (0 bytes).`;
    if (file.size > MAX_BYTES) return `"${file.name}" is ${size(file.size)}; the limit is ${size(MAX_BYTES)}. Shorten or compress it (for example to MP3) and try again.`;
    return null;
  }

  function showUploadError(text) {
    const box = $('upload-error');
    box.textContent = text || '';
    box.hidden = !text;
  }

  function chooseFile(file) {
    showUploadError('');
    const problem = checkFile(file);
    if (problem) {
      state.file = null;
      $('file-chosen').textContent = '';
      $('upload-button').disabled = true;
      showUploadError(problem);
      return;
    }
    state.file = file;
    $('file-chosen').textContent = `Ready: ${file.name} (${size(file.size)})`;
    $('upload-button').disabled = false;
    $('upload-button').focus();
  }

  function upload() {
    const file = state.file;
    const problem = checkFile(file);
    if (problem) { showUploadError(problem); return; }
    showUploadError('');
    const speakers = $('num-speakers').value;
    const query = speakers === 'auto' ? '' : `?num_speakers=${encodeURIComponent(speakers)}`;
    const form = new FormData();
    form.append('file', file, file.name);

    const xhr = new XMLHttpRequest();
    xhr.open('POST', `/api/upload${query}`);
    xhr.setRequestHeader('Accept', 'application/json');
    if (storedKey()) xhr.setRequestHeader('Authorization', `Bearer ${storedKey()}`);
    $('upload-button').disabled = true;
    showProgress(file.name);
    setProgress(0, 'Uploading…');
    xhr.upload.onprogress = (ev) => {
      if (ev.lengthComputable) setProgress(0, `Uploading… ${Math.round((100 * ev.loaded) / ev.total)}%`);
    };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status === 200 && body && body.job_id) {
        state.localAudio.set(body.job_id, file);
        state.file = null;
        $('file-input').value = '';
        $('file-chosen').textContent = '';
        location.hash = `job=${body.job_id}`;
        track(body.job_id, file.name);
        refreshJobs();
      } else {
        $('progress').hidden = true;
        $('upload-button').disabled = false;
        if (xhr.status === 401) askForKey(storedKey() ? 'This key was not accepted (unknown or revoked). Enter another one.' : '');
        showUploadError(uploadRefusal(xhr.status, body, xhr.getResponseHeader('Retry-After')));
      }
    };
    xhr.onerror = () => {
      $('progress').hidden = true;
      $('upload-button').disabled = false;
      showUploadError(uploadRefusal(0, null, null));
    };
    xhr.send(form);
  }

  // ---------- progress ----------
  function showProgress(filename) {
    $('progress').hidden = false;
    $('progress-error').hidden = true;
    $('progress-filename').textContent = filename;
    $('cancel-button').hidden = false;
  }

  function setProgress(pct, step, eta) {
    pct = Math.max(0, Math.min(100, pct | 0));
    if (eta != null && eta > 0) step = `${step}, about ${clock(Math.ceil(eta))} left`;
    $('progress-fill').style.width = `${pct}%`;
    const bar = $('progress-bar');
    bar.setAttribute('aria-valuenow', String(pct));
    bar.setAttribute('aria-valuetext', `${pct}%: ${step}`);
    $('progress-step').textContent = pct > 0 || !step.startsWith('Upload') ? `${step} (${pct}%)` : step;
  }

  function stopPolling() {
    clearTimeout(state.pollTimer);
    state.pollTimer = null;
    state.pollingId = null;
    if (state.stream) state.stream.abort();
    state.stream = null;
  }

  // ---------- live transcript ----------
  function clearPartials() {
    state.partials.clear();
    $('live-text').textContent = '';
    $('live').hidden = true;
  }

  function addPartial(seg) {
    state.partials.set(seg.id, seg);
    const text = [...state.partials.values()]
      .sort((a, b) => a.start - b.start)
      .map((s) => s.text)
      .join(' ');
    const box = $('live-text');
    const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    box.textContent = text;
    if (atEnd) box.scrollTop = box.scrollHeight;
    $('live').hidden = !text;
  }

  // One status record of job `id` (from the stream or a poll); true once
  // the job has ended (and its outcome is shown).
  async function onStatus(id, job) {
    if (job.filename) $('progress-filename').textContent = job.filename + (job.duration ? ` · ${clock(job.duration)} of audio` : '');
    if (job.status === 'queued') setProgress(0, 'Waiting for a free slot');
    else setProgress(job.progress, job.step || job.status, job.eta_seconds);
    if (job.status === 'completed') {
      stopPolling();
      refreshJobs();
      await openResult(id, job.filename);
      return true;
    }
    if (job.status === 'failed') {
      stopPolling();
      refreshJobs();
      progressError(`Processing failed: ${job.error || 'unknown error'}`);
      return true;
    }
    if (job.status === 'cancelled') {
      stopPolling();
      progressError('This job was cancelled.');
      return true;
    }
    return false;
  }

  // Follows job `id` through its event stream until its `done` event: true
  // then; false (or an error) when the stream could not be had or broke off.
  async function follow(id) {
    const ctrl = new AbortController();
    state.stream = ctrl;
    const res = await fetch(`/api/jobs/${id}/events`, {
      headers: { Accept: 'text/event-stream', ...authHeaders() },
      signal: ctrl.signal,
    });
    if (res.status !== 200 || !res.body) return false;
    document.body.dataset.live = 'events';
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buf += value;
      let at;
      while ((at = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, at);
        buf = buf.slice(at + 2);
        let event = 'message';
        let data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) event = line.slice(6).trim();
          else if (line.startsWith('data:')) data += line.slice(5).trim();
        }
        if (!data || state.pollingId !== id) continue;
        const msg = JSON.parse(data);
        if (event === 'segment') addPartial(msg);
        else if (event === 'status') { if (await onStatus(id, msg)) return true; }
        else if (event === 'done') {
          if (!(await onStatus(id, msg))) progressError('The job ended without a result.');
          return true;
        }
      }
    }
  }

  // Follows one job until it ends: live when the event stream can be had,
  // else by polling its status every second.
  async function track(id, filename) {
    stopPolling();
    state.pollingId = id;
    showProgress(filename || '');
    clearPartials();
    $('results').hidden = true;
    delete document.body.dataset.live;
    try {
      if (await follow(id)) return;
    } catch (_) { /* blocked, refused or broken off: poll instead */ }
    if (state.pollingId !== id) return;
    state.stream = null;
    document.body.dataset.live = 'polling';
    const tick = async () => {
      if (state.pollingId !== id) return;
      let r;
      try { r = await api('GET', `/api/status/${id}`); } catch (_) { r = { status: 0 }; }
      if (state.pollingId !== id) return;
      if (r.status === 404) {
        progressError('This job no longer exists on the server (it was deleted).');
        return;
      }
      if (r.status !== 200) {
        $('progress-step').textContent = 'Lost contact with the server; retrying…';
        state.pollTimer = setTimeout(tick, POLL_MS);
        return;
      }
      if (!(await onStatus(id, r.body))) state.pollTimer = setTimeout(tick, POLL_MS);
    };
    tick();
  }

  function progressError(text) {
    stopPolling();
    const box = $('progress-error');
    box.textContent = text;
    box.hidden = false;
    $('cancel-button').hidden = true;
    $('upload-button').disabled = !state.file;
  }

  async function cancelCurrent() {
    const id = state.pollingId;
    if (!id) return;
    stopPolling();
    await api('DELETE', `/api/jobs/${id}`);
    $('progress').hidden = true;
    $('upload-button').disabled = !state.file;
    if (location.hash.includes(id)) history.replaceState(null, '', location.pathname);
    refreshJobs();
  }

  // ---------- results ----------
  const namesKey = (id) => `colloquy.names.${id}`;
  function loadNames(id) {
    try { return JSON.parse(localStorage.getItem(namesKey(id)) || '{}') || {}; } catch (_) { return {}; }
  }
  function saveNames(id, names) {
    try { localStorage.setItem(namesKey(id), JSON.stringify(names)); } catch (_) { /* private mode */ }
  }
  // "SPEAKER_00" -> "Speaker 1" unless renamed.
  function speakerName(label) {
    const cur = state.current;
    if (cur && cur.names[label]) return cur.names[label];
    const m = /^SPEAKER_(\d+)$/.exec(label || '');
    return m ? `Speaker ${Number(m[1]) + 1}` : (label || 'Unknown');
  }
  function colourOf(label) {
    const i = state.current ? state.current.speakers.indexOf(label) : -1;
    return i < 0 ? '#c8ccd4' : COLOURS[i % COLOURS.length];
  }

  async function openResult(id, filename) {
    stopPolling();
    if (!filename) {
      try { const s = await api('GET', `/api/status/${id}`); filename = (s.body && s.body.filename) || ''; } catch (_) { /* shown below */ }
    }
    let r;
    try { r = await api('GET', `/api/results/${id}`); } catch (_) { r = { status: 0 }; }
    if (r.status === 202) { track(id, filename); return; }
    if (r.status !== 200 || !r.body) {
      showProgress(filename || '');
      const why = (r.body && r.body.message) || `HTTP ${r.status}`;
      progressError(r.status === 404 ? 'This job no longer exists on the server.'
        : r.status === 422 ? `This file could not be transcribed: ${why}`
          : `The results could not be loaded: ${why}`);
      return;
    }
    $('progress').hidden = true;
    $('upload-button').disabled = !state.file;
    renderResult(id, filename, r.body);
  }

  // Utterances from the result: aligned_segments (or segments), each with its
  // words when the result has them (older results have only `text`); a
  // segment whose words change speaker is cut there, so every utterance (and
  // every cue and paragraph of the exports) is one speaker's.
  function utterances(result) {
    const src = result.aligned_segments && result.aligned_segments.length ? result.aligned_segments : result.segments || [];
    const out = [];
    for (const s of src) {
      const speaker = s.speaker || 'SPEAKER_00';
      const seg = { start: +s.start || 0, end: +s.end || 0, text: (s.text || '').trim(), speaker, words: [] };
      const words = (Array.isArray(s.words) ? s.words : []).filter((w) => (w.word || '').trim()).map((w) => ({
        text: w.word, start: +w.start || 0, end: +w.end || 0, speaker: w.speaker || speaker, overlapped: !!w.overlapped,
        probability: w.probability == null ? 1 : +w.probability,
      }));
      const runs = [];
      for (const w of words) {
        const run = runs[runs.length - 1];
        if (run && run[0].speaker === w.speaker) run.push(w); else runs.push([w]);
      }
      if (runs.length <= 1) {
        seg.words = words;
        if (!seg.text && words.length) seg.text = joinWords(words);
        if (seg.text) out.push(seg);
      } else {
        runs.forEach((run, k) => out.push({
          start: k ? run[0].start : seg.start, end: k < runs.length - 1 ? run[run.length - 1].end : seg.end,
          text: joinWords(run), speaker: run[0].speaker, words: run,
        }));
      }
    }
    out.forEach((s, i) => { s.i = i; });
    return out;
  }
  // Words keep Whisper's leading space (" Hello,"), so they join as they are.
  const joinWords = (ws) => ws.map((w) => w.text).join('').replace(/\s+/g, ' ').trim();

  function renderResult(id, filename, result) {
    const segs = utterances(result);
    const turnsSrc = result.speaker_turns && result.speaker_turns.length ? result.speaker_turns : segs;
    const turns = turnsSrc.map((t) => ({ start: +t.start || 0, end: +t.end || 0, speaker: t.speaker || 'SPEAKER_00' }));
    const speakers = [...new Set([...segs.map((s) => s.speaker), ...turns.map((t) => t.speaker)])].sort();
    const duration = +result.duration || Math.max(0, ...segs.map((s) => s.end), ...turns.map((t) => t.end));
    state.current = { id, filename: filename || 'recording', result, segs, turns, speakers, duration, names: loadNames(id) };
    state.activeSeg = -1;
    state.activeWord = null;

    const pm = result.performance_metrics || {};
    const parts = [
      filename,
      `${clock(duration)} of audio`,
      `${speakers.length} speaker${speakers.length === 1 ? '' : 's'}`,
      result.language ? `language: ${result.language}` : null,
      pm.total_duration ? `processed in ${(+pm.total_duration).toFixed(1)} s${pm.speed ? ` (${(+pm.speed).toFixed(1)}× real time)` : ''}` : null,
    ].filter(Boolean);
    $('results-summary').textContent = parts.join(' · ');


    setupPlayer(id);
    renderSpeakers();
    renderTimeline();
    renderTranscript();
    $('results').hidden = false;
    $('results-title').focus({ preventScroll: true });
    $('results').scrollIntoView({ block: 'start', behavior: 'smooth' });
  }

  function setupPlayer(id) {
    const player = $('player');
    if (state.objectUrl) { URL.revokeObjectURL(state.objectUrl); state.objectUrl = null; }
    const file = state.localAudio.get(id);
    if (file) {
      state.objectUrl = URL.createObjectURL(file);
      player.src = state.objectUrl;
      player.hidden = false;
      $('no-audio').hidden = true;
    } else {
      player.removeAttribute('src');
      player.load();
      player.hidden = true;
      $('no-audio').hidden = false;
    }
  }

  function renderSpeakers() {
    const cur = state.current;
    const list = $('speakers');
    list.replaceChildren();
    cur.speakers.forEach((label) => {
      const talk = cur.segs.filter((s) => s.speaker === label).reduce((a, s) => a + (s.end - s.start), 0);
      const inputId = `name-${label}`;
      const input = el('input', {
        id: inputId, type: 'text', value: speakerName(label), maxlength: '40', autocomplete: 'off', spellcheck: 'false',
      });
      input.dataset.speaker = label;
      input.addEventListener('input', () => {
        const v = input.value.trim();
        if (v) cur.names[label] = v; else delete cur.names[label];
        saveNames(cur.id, cur.names);
        applyNames();
      });
      const swatch = el('span', { class: 'swatch', 'aria-hidden': 'true' });
      swatch.style.background = colourOf(label);
      // the server's speaker library: remember this voice under the name
      // typed (later uploads carry it), or rename a known speaker there
      const known = (cur.result.known_speakers || []).find((k) => k.speaker === label);
      const remember = el('button', {
        class: 'button secondary small', type: 'button',
        text: known ? 'Rename in library' : 'Remember',
        title: known ? `Known speaker (${Math.round((known.speaker_confidence || 0) * 100)}% match): rename everywhere`
          : 'Save this voice with this name: later recordings of it are named by the server',
      });
      remember.dataset.remember = label;
      const typed = () => (cur.names[label] || '').trim();
      const sync = () => { remember.disabled = !typed() || typed() === label; };
      sync();
      input.addEventListener('input', sync);
      remember.addEventListener('click', async () => {
        remember.disabled = true;
        const name = typed();
        const r = known
          ? await apiJson('PATCH', `/api/speakers/${encodeURIComponent(known.speaker_id)}`, { name })
          : await apiJson('POST', '/api/speakers', { name, job_id: cur.id, speaker: label });
        if (r.status !== 200 && r.status !== 201) {
          remember.disabled = false;
          remember.title = (r.body && r.body.message) || `HTTP ${r.status}`;
          return;
        }
        // the server names the speaker now: the local rename is not needed
        delete cur.names[label];
        saveNames(cur.id, cur.names);
        await openResult(cur.id, cur.filename);
      });
      list.append(el('li', { class: 'speaker' },
        swatch,
        el('label', { for: inputId, class: 'visually-hidden', text: `Name for ${label}` }),
        input,
        remember,
        el('span', { class: 'talk', text: `${clock(talk)} spoken` })));
    });
  }

  // Updates every place a speaker's name shows, without re-rendering.
  function applyNames() {
    document.querySelectorAll('[data-speaker-name]').forEach((n) => { n.textContent = speakerName(n.dataset.speakerName); });
    document.querySelectorAll('[data-lane-label]').forEach((n) => { n.setAttribute('aria-label', `${speakerName(n.dataset.laneLabel)}'s lane`); });
  }

  function renderTimeline() {
    const cur = state.current;
    const tl = $('timeline');
    tl.replaceChildren();
    const dur = cur.duration || 1;
    cur.speakers.forEach((label) => {
      const track = el('div', { class: 'lane-track' });
      track.dataset.laneLabel = label;
      track.setAttribute('aria-label', `${speakerName(label)}'s lane`);
      cur.turns.filter((t) => t.speaker === label).forEach((t) => {
        const b = el('div', { class: 'turn', title: `${speakerName(label)} ${clock(t.start)}–${clock(t.end)}` });
        b.style.left = `${(100 * t.start) / dur}%`;
        b.style.width = `${Math.max(0.4, (100 * (t.end - t.start)) / dur)}%`;
        b.style.background = colourOf(label);
        track.append(b);
      });
      track.addEventListener('click', (ev) => {
        const r = track.getBoundingClientRect();
        seek(((ev.clientX - r.left) / r.width) * dur, false);
      });
      const name = el('span', { class: 'lane-name', text: speakerName(label) });
      name.dataset.speakerName = label;
      name.style.color = colourOf(label);
      tl.append(el('div', { class: 'lane' }, name, track));
    });
    const axis = el('div', { class: 'lane axis', 'aria-hidden': 'true' }, el('span', { class: 'lane-name' }),
      el('div', { class: 'axis-track' }, el('span', { text: '0:00' }), el('span', { text: clock(dur / 2) }), el('span', { text: clock(dur) })));
    tl.append(axis);
    const head = el('div', { id: 'playhead', class: 'playhead', 'aria-hidden': 'true' });
    tl.append(head);
    updatePlayhead();
  }

  // Consecutive segments of one speaker form a turn.
  function groupTurns(segs) {
    const groups = [];
    for (const s of segs) {
      const last = groups[groups.length - 1];
      if (last && last.speaker === s.speaker) { last.segs.push(s); last.end = s.end; } else groups.push({ speaker: s.speaker, start: s.start, end: s.end, segs: [s] });
    }
    return groups;
  }

  function renderTranscript() {
    const cur = state.current;
    const box = $('transcript');
    box.replaceChildren();
    $('word-legend').hidden = !cur.segs.some((s) => s.words.some((w) => w.overlapped || w.probability < 0.5));
    if (!cur.segs.length) {
      box.append(el('p', { class: 'hint', text: 'No speech was found in this recording.' }));
      return;
    }
    for (const g of groupTurns(cur.segs)) {
      const name = el('span', { class: 'turn-speaker', text: speakerName(g.speaker) });
      name.dataset.speakerName = g.speaker;
      name.style.color = colourOf(g.speaker);
      const head = el('div', { class: 'turn-head' }, name, el('span', { class: 'turn-time', text: `${clock(g.start)} – ${clock(Math.ceil(g.end))}` }));
      const body = el('p', { class: 'turn-text' });
      g.segs.forEach((s, k) => {
        const span = el('span', { class: 'seg', role: 'button', tabindex: '0' });
        if (s.words.length) s.words.forEach((w, j) => span.append(...wordNodes(w, j)));
        else { span.textContent = s.text; span.title = `Play from ${clock(s.start)}`; }
        span.dataset.index = String(s.i);
        span.dataset.start = String(s.start);
        span.dataset.end = String(s.end);
        span.setAttribute('aria-label', `${clock(s.start)}: ${s.text}`);
        body.append(span);
        if (k < g.segs.length - 1) body.append(' ');
      });
      const block = el('article', { class: 'turn-block' }, head, body);
      block.style.borderLeftColor = colourOf(g.speaker);
      box.append(block);
    }
  }

  // A word as a span with its times (and its leading space outside it, so the
  // highlight covers the word only); overlapped and unsure words are marked.
  function wordNodes(w, j) {
    const unsure = w.probability < 0.5;
    const notes = [w.overlapped ? 'overlapped speech' : null, unsure ? `unsure (${Math.round(w.probability * 100)}%)` : null].filter(Boolean);
    const span = el('span', {
      class: `word${w.overlapped ? ' overlapped' : ''}${unsure ? ' unsure' : ''}`, text: w.text.trim(),
      title: [`Play from ${clockTenths(w.start)}`, ...notes].join(' · '),
    });
    span.dataset.start = String(w.start);
    span.dataset.end = String(w.end);
    w.el = span;
    return j && /^\s/.test(w.text) ? [' ', span] : [span];
  }

  function seek(t, play = true) {
    const player = $('player');
    if (!state.current || !state.localAudio.get(state.current.id)) {
      highlightAt(t);
      return;
    }
    player.currentTime = Math.max(0, t);
    if (play) player.play().catch(() => { /* autoplay refused: the seek still happened */ });
    highlightAt(t);
    updatePlayhead();
  }

  // The utterance being spoken at t: one that holds t, else one starting
  // within 50 ms (a click lands on its start).
  function segAt(t) {
    const segs = state.current ? state.current.segs : [];
    let best = -1, near = -1;
    for (const s of segs) {
      if (s.start - 0.05 > t) break;
      if (t >= s.start && t < s.end) best = s.i;
      else if (t < s.end) near = s.i;
    }
    return best >= 0 ? best : near;
  }

  // The word being spoken: the last one started by t, held through short
  // gaps between words (no flicker), none in a pause.
  function wordAt(words, t) {
    let best = null;
    for (const w of words) { if (w.start <= t + 0.001) best = w; else break; }
    return best && t < Math.max(best.end, best.start) + 0.3 ? best : null;
  }

  function highlightAt(t) {
    const i = segAt(t);
    if (i !== state.activeSeg) {
      const box = $('transcript');
      const old = box.querySelector('.seg.active');
      if (old) { old.classList.remove('active'); old.removeAttribute('aria-current'); }
      state.activeSeg = i;
      const now = i < 0 ? null : box.querySelector(`.seg[data-index="${i}"]`);
      if (now) {
        now.classList.add('active');
        now.setAttribute('aria-current', 'true');
        const player = $('player');
        if (!player.paused && !now.matches(':focus')) now.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
      }
    }
    const w = i < 0 ? null : wordAt(state.current.segs[i].words, t);
    if (w !== state.activeWord) {
      if (state.activeWord && state.activeWord.el) state.activeWord.el.classList.remove('now');
      state.activeWord = w;
      if (w && w.el) w.el.classList.add('now');
    }
  }

  function updatePlayhead() {
    const head = $('playhead');
    if (!head || !state.current) return;
    const player = $('player');
    const has = !!state.localAudio.get(state.current.id);
    head.hidden = !has;
    if (!has) return;
    const frac = Math.min(1, Math.max(0, (player.currentTime || 0) / (state.current.duration || 1)));
    head.style.setProperty('--at', String(frac));
  }

  // ---------- downloads (rendered by the server: GET /api/results/{id}?format=) ----------
  function save(text, filename, type) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const a = el('a', { href: url, download: filename });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }
  // The current job in `format`, with the speaker names shown on the page
  // (renames stay in this browser; the server only uses them for this answer).
  async function exported(format) {
    const cur = state.current;
    const names = JSON.stringify(Object.fromEntries(cur.speakers.map((s) => [s, speakerName(s)])));
    const res = await fetch(`/api/results/${cur.id}?format=${format}&names=${encodeURIComponent(names)}`,
      { headers: authHeaders() });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    return res.text();
  }
  const TYPES = { json: 'application/json', txt: 'text/plain', srt: 'application/x-subrip', vtt: 'text/vtt', tsv: 'text/tab-separated-values', rttm: 'text/plain' };
  async function download(format) {
    if (!state.current) return;
    const name = `${stem(state.current.filename)}.${format}`;
    try {
      save(await exported(format), name, TYPES[format]);
    } catch (e) {
      progressError(`The ${format.toUpperCase()} file could not be made: ${e.message}`);
    }
  }

  // ---------- job list ----------
  const STATUS_WORDS = { queued: 'Waiting', processing: 'Processing', completed: 'Done', failed: 'Failed', cancelled: 'Cancelled' };

  async function refreshJobs() {
    clearTimeout(state.jobsTimer);
    let r;
    try { r = await api('GET', '/api/jobs'); } catch (_) { r = { status: 0 }; }
    const list = $('job-list');
    if (r.status === 401) {   // the key form is shown; the list waits for a key
      $('jobs-empty').hidden = false;
      $('jobs-empty').textContent = 'Enter an API key to see your jobs.';
      list.replaceChildren();
      return;
    }
    if (r.status !== 200 || !r.body) {
      $('jobs-empty').hidden = false;
      $('jobs-empty').textContent = 'The job list could not be loaded.';
      state.jobsTimer = setTimeout(refreshJobs, 5000);
      return;
    }
    const jobs = (r.body.jobs || []).slice().reverse();   // newest first
    $('jobs-empty').hidden = jobs.length > 0;
    $('jobs-empty').textContent = 'No jobs yet.';
    list.replaceChildren(...jobs.map(jobItem));
    if (jobs.some((j) => j.status === 'queued' || j.status === 'processing')) state.jobsTimer = setTimeout(refreshJobs, 3000);
  }

  function jobItem(job) {
    const open = job.status === 'completed' || job.status === 'queued' || job.status === 'processing' || job.status === 'failed';
    const when = job.created_at ? new Date(job.created_at) : null;
    const meta = [
      when ? when.toLocaleString() : null,
      job.duration ? `${clock(job.duration)} of audio` : null,
      job.status === 'processing' ? `${job.progress}% · ${job.step}` : null,
      state.localAudio.has(job.job_id) ? 'audio in this page' : null,
    ].filter(Boolean).join(' · ');
    const status = el('span', { class: `badge ${job.status}`, text: STATUS_WORDS[job.status] || job.status });
    const actions = el('div', { class: 'job-actions' });
    if (open) {
      actions.append(el('button', {
        class: 'button secondary small', type: 'button', text: job.status === 'completed' ? 'Open' : 'Show',
        'aria-label': `${job.status === 'completed' ? 'Open' : 'Show'} ${job.filename}`,
        onclick: () => {
          location.hash = `job=${job.job_id}`;
          if (job.status === 'completed') openResult(job.job_id, job.filename); else track(job.job_id, job.filename);
        },
      }));
    }
    actions.append(el('button', {
      class: 'button danger small', type: 'button', text: 'Delete', 'aria-label': `Delete ${job.filename}`,
      onclick: () => deleteJob(job),
    }));
    const current = state.current && state.current.id === job.job_id;
    return el('li', { class: `job${current ? ' current' : ''}` },
      el('div', { class: 'job-main' },
        el('span', { class: 'job-name', text: job.filename }),
        status,
        el('span', { class: 'job-meta', text: meta }),
        job.status === 'failed' && job.error ? el('span', { class: 'job-error', text: job.error }) : null),
      actions);
  }

  async function deleteJob(job) {
    if (!window.confirm(`Delete "${job.filename}" and its transcript from the server?`)) return;
    const r = await api('DELETE', `/api/jobs/${job.job_id}`);
    if (r.status !== 200 && r.status !== 404) {
      window.alert(`Could not delete: ${(r.body && r.body.message) || `HTTP ${r.status}`}`);
    }
    state.localAudio.delete(job.job_id);
    localStorage.removeItem(namesKey(job.job_id));
    if (state.pollingId === job.job_id) { stopPolling(); $('progress').hidden = true; }
    if (state.current && state.current.id === job.job_id) { $('results').hidden = true; state.current = null; }
    if (location.hash.includes(job.job_id)) history.replaceState(null, '', location.pathname);
    refreshJobs();
  }

  // ---------- wiring ----------
  function init() {
    const input = $('file-input');
    input.addEventListener('change', () => { if (input.files && input.files[0]) chooseFile(input.files[0]); });
    const dz = $('dropzone');
    ['dragenter', 'dragover'].forEach((t) => dz.addEventListener(t, (e) => { e.preventDefault(); dz.classList.add('over'); }));
    ['dragleave', 'dragend'].forEach((t) => dz.addEventListener(t, () => dz.classList.remove('over')));
    dz.addEventListener('drop', (e) => {
      e.preventDefault();
      dz.classList.remove('over');
      const files = e.dataTransfer && e.dataTransfer.files;
      if (!files || !files.length) return;
      if (files.length > 1) { showUploadError('Drop one file at a time.'); return; }
      chooseFile(files[0]);
    });
    // a file dropped outside the drop zone must not navigate away from the page
    window.addEventListener('dragover', (e) => e.preventDefault());
    window.addEventListener('drop', (e) => e.preventDefault());

    $('upload-form').addEventListener('submit', (e) => { e.preventDefault(); upload(); });
    $('cancel-button').addEventListener('click', cancelCurrent);
    $('jobs-refresh').addEventListener('click', refreshJobs);

    const tr = $('transcript');
    const activate = (target) => {
      const s = target.closest('.word') || target.closest('.seg');
      if (s) seek(parseFloat(s.dataset.start));
    };
    tr.addEventListener('click', (e) => activate(e.target));
    tr.addEventListener('keydown', (e) => {
      if ((e.key === 'Enter' || e.key === ' ') && e.target.classList.contains('seg')) { e.preventDefault(); activate(e.target); }
    });

    const player = $('player');
    player.addEventListener('timeupdate', () => { highlightAt(player.currentTime); updatePlayhead(); });
    player.addEventListener('seeked', () => { highlightAt(player.currentTime); updatePlayhead(); });
    let raf = 0;
    // word by word: timeupdate comes only about 4 times a second
    const frame = () => { highlightAt(player.currentTime); updatePlayhead(); if (!player.paused) raf = requestAnimationFrame(frame); };
    player.addEventListener('play', () => { cancelAnimationFrame(raf); raf = requestAnimationFrame(frame); });

    $('attach-input').addEventListener('change', (e) => {
      const f = e.target.files && e.target.files[0];
      if (f && state.current) {
        state.localAudio.set(state.current.id, f);
        setupPlayer(state.current.id);
        updatePlayhead();
      }
    });

    for (const f of Object.keys(TYPES)) $(`dl-${f}`).addEventListener('click', () => download(f));

    $('key-form').addEventListener('submit', useKey);
    $('forget-key').addEventListener('click', forgetKey);
    api('GET', '/health').then((r) => {
      if (r.body && r.body.auth === 'keys') {
        if (storedKey()) $('forget-key').hidden = false; else askForKey('');
      }
      if (r.status === 200 && r.body) {
        const d = r.body.device || {};
        const dev = typeof d === 'string' ? d : (d.whisper || d.transcriber || Object.values(d)[0] || '');
        const models = (r.body.whisper_models || []).map((m) => m.name).filter((n) => n !== r.body.whisper_model);
        $('server-info').textContent = `Whisper ${r.body.whisper_model || ''}${dev ? ` on ${String(dev).toUpperCase()}` : ''}${models.length ? ` (also installed: ${models.join(', ')})` : ''} · ${r.body.active_jobs || 0} running, ${r.body.queued_jobs || 0} waiting`;
      }
    }).catch(() => { $('server-info').textContent = 'Server unreachable'; });

    refreshJobs();
    const m = /job=([0-9a-f-]{36})/i.exec(location.hash);
    if (m) openResult(m[1], '');
  }

  // for tests and the curious: the text exports, as the buttons save them (from the server)
  window.colloquy = {
    exports: async () => (state.current
      ? { txt: await exported('txt'), srt: await exported('srt'), vtt: await exported('vtt') } : null),
  };

  init();
})();
