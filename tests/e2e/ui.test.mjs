// End-to-end test of the web UI (#5): the real `colloquy serve` (real models)
// and Debian's headless Chromium driven by playwright-core.
//
// Run by scripts/e2e.sh (make test). Uploads a two-voice clip with 2 speakers
// through the page, waits for the transcript, checks the speakers, the words,
// the timeline, click-to-seek on the audio element, the word spans (times,
// word-by-word highlight, click on a word), renaming, the text exports (every
// SRT/VTT cue one speaker's words, checked against the result JSON), a result
// without words (older jobs), the client-side refusal of a non-audio file and
// deleting a job; saves screenshots under target/e2e/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = process.env.COLLOQUY_BIN || path.join(ROOT, 'target', 'release', 'colloquy');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const OUT = path.join(ROOT, 'target', 'e2e');
// COLLOQUY_E2E_CONV1=/nonexistent forces the espeak-ng clip.
const CONV1 = process.env.COLLOQUY_E2E_CONV1 || path.resolve(ROOT, '..', 'shared', 'data', 'synthetic', 'conv1.mp3');
// Words both clips contain (conv1's script and the generated one below).
const WORDS = ['budget', 'travel', 'conference'];

// Cue limits of the page's SRT/VTT (app.js: LINE, CUE_S): two lines of ~42.
const CUE_CHARS = 84; const CUE_SECONDS = 7;

const norm = (t) => t.replace(/\s+/g, ' ').trim();
const jobId = (page) => page.evaluate(() => /job=([0-9a-f-]{36})/i.exec(location.hash)[1]);
const resultOf = async (page) => page.evaluate((id) => fetch(`/api/results/${id}`).then((r) => r.json()), await jobId(page));
/// The result's words in order, each with its speaker (the word's, else its utterance's).
const wordsOf = (result) => (result.aligned_segments || [])
  .flatMap((s) => (s.words || []).map((w) => ({ ...w, speaker: w.speaker || s.speaker })))
  .filter((w) => w.word.trim());
/// SRT text -> [{ n, start, end, lines }].
function parseSrt(srt) {
  const sec = (h, m, s, ms) => 3600 * h + 60 * m + +s + ms / 1000;
  return srt.trim().split(/\n\n+/).map((block) => {
    const [n, times, ...lines] = block.split('\n');
    const m = /^(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})$/.exec(times);
    assert.ok(m, `bad SRT times: ${block}`);
    return { n: +n, start: sec(+m[1], +m[2], m[3], +m[4]), end: sec(+m[5], +m[6], m[7], +m[8]), lines };
  });
}
/// Each cue: at most 2 lines, "Name: " a known speaker's name, times in order.
function checkCues(cues, names) {
  let prev = null;
  for (const c of cues) {
    assert.ok(c.lines.length >= 1 && c.lines.length <= 2, `cue ${c.n}: ${c.lines.length} lines`);
    const name = Object.values(names).find((x) => c.lines[0].startsWith(`${x}: `));
    assert.ok(name, `cue ${c.n} has no speaker name: ${c.lines[0]}`);
    c.name = name;
    c.text = norm(c.lines.join(' ').slice(name.length + 2));
    assert.ok(c.end > c.start, `cue ${c.n}: ${c.start} --> ${c.end}`);
    if (prev) assert.ok(c.start >= prev.start, `cue ${c.n} starts before cue ${prev.n}`);
    prev = c;
  }
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'colloquy-e2e-'));
let server; let baseUrl; let browser;

/// conv1.mp3 from the shared data, or a two-voice clip made with espeak-ng.
function twoVoiceClip() {
  if (fs.existsSync(CONV1)) return { file: CONV1, how: 'shared conv1.mp3' };
  const espeak = spawnSync('espeak-ng', ['--version']);
  if (espeak.status !== 0) return null;
  const lines = [
    ['en-us', 'Good morning, thanks for joining the call. I wanted to go over the budget before the meeting on Thursday.'],
    ['en-us+f3', 'Sure. The travel costs went up by ten percent this year.'],
    ['en-us', 'That is more than I expected. Do we know why?'],
    ['en-us+f3', 'Mostly because the conference moved to a different city.'],
    ['en-us', 'Then we should ask the team to book their flights early.'],
    ['en-us+f3', 'Good idea. I will send an email this afternoon.'],
  ];
  let rate = 0; const parts = [];
  lines.forEach(([voice, text], i) => {
    const wav = path.join(tmp, `line${i}.wav`);
    const r = spawnSync('espeak-ng', ['-v', voice, '-w', wav, text]);
    assert.equal(r.status, 0, `espeak-ng failed: ${r.stderr}`);
    const buf = fs.readFileSync(wav);
    rate = buf.readUInt32LE(24);
    let off = 12; // after RIFF....WAVE
    while (buf.toString('ascii', off, off + 4) !== 'data') off += 8 + buf.readUInt32LE(off + 4);
    parts.push(buf.subarray(off + 8), Buffer.alloc(Math.round(rate * 0.5) * 2)); // speech, 0.5 s silence
  });
  const data = Buffer.concat(parts);
  const head = Buffer.alloc(44);
  head.write('RIFF', 0); head.writeUInt32LE(36 + data.length, 4); head.write('WAVE', 8);
  head.write('fmt ', 12); head.writeUInt32LE(16, 16); head.writeUInt16LE(1, 20); head.writeUInt16LE(1, 22);
  head.writeUInt32LE(rate, 24); head.writeUInt32LE(rate * 2, 28); head.writeUInt16LE(2, 32); head.writeUInt16LE(16, 34);
  head.write('data', 36); head.writeUInt32LE(data.length, 40);
  const file = path.join(tmp, 'two_voices.wav');
  fs.writeFileSync(file, Buffer.concat([head, data]));
  return { file, how: 'generated with espeak-ng' };
}

const clip = twoVoiceClip();
const skip = !clip ? 'no two-voice clip: ../shared/data/synthetic/conv1.mp3 is absent and espeak-ng is not installed' : false;

/// `colloquy serve` on a free port with its own storage folder under tmp;
/// its log goes to target/e2e/<logName>.
async function startServer(storageName, logName, env) {
  const log = fs.openSync(path.join(OUT, logName), 'w');
  const proc = spawn(BIN, ['serve', '--port', '0', '--storage', path.join(tmp, storageName)], {
    env: { ...process.env, COLLOQUY__SERVER__BIND: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', log],
  });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`colloquy serve printed no address in 60 s (see target/e2e/${logName})`)), 60000);
    proc.once('exit', (code) => reject(new Error(`colloquy serve exited with ${code} (see target/e2e/${logName})`)));
    createInterface({ input: proc.stdout }).on('line', (line) => {
      const m = /^colloquy listening on (http:\/\/\S+)/.exec(line);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
  });
  return { proc, url };
}

async function stopServer(proc) {
  if (!proc || proc.exitCode !== null) return;
  const gone = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
  await gone; clearTimeout(t);
}

before(async () => {
  if (skip) return;
  assert.ok(fs.existsSync(BIN), `${BIN} is missing: run cargo build --release`);
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium`);
  fs.mkdirSync(OUT, { recursive: true });
  ({ proc: server, url: baseUrl } = await startServer('storage', 'server.log', {}));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
  });
});

after(async () => {
  if (browser) await browser.close();
  await stopServer(server);
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('upload a two-voice clip, read who said what, click through the audio', { skip, timeout: 240000 }, async (t) => {
  t.diagnostic(`clip: ${clip.file} (${clip.how}); server ${baseUrl}`);
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('dialog', (d) => d.accept());
  await page.goto(baseUrl + '/');
  assert.match(await page.title(), /Colloquy/);

  await t.test('a dropped non-audio file is refused in plain words', async () => {
    const dt = await page.evaluateHandle(() => {
      const d = new DataTransfer();
      d.items.add(new File(['just some notes'], 'notes.txt', { type: 'text/plain' }));
      return d;
    });
    await page.dispatchEvent('#dropzone', 'drop', { dataTransfer: dt });
    const msg = page.locator('#upload-error');
    await msg.waitFor({ state: 'visible' });
    assert.match(await msg.innerText(), /notes\.txt.*not a recording/);
    assert.equal(await page.locator('#upload-button').isDisabled(), true);
  });

  await t.test('upload with 2 speakers, progress shows, transcript arrives', async () => {
    await page.setInputFiles('#file-input', clip.file);
    assert.match(await page.locator('#file-chosen').innerText(), /Ready:/);
    assert.equal(await page.locator('#upload-error').isVisible(), false);
    await page.selectOption('#num-speakers', '2');
    // every step text the page shows, and the bar's value with it
    await page.evaluate(() => {
      window.seenSteps = [];
      const step = document.getElementById('progress-step');
      new MutationObserver(() => window.seenSteps.push(
        `${step.textContent} [${document.getElementById('progress-bar').getAttribute('aria-valuenow')}]`,
      )).observe(step, { childList: true, characterData: true, subtree: true });
      // the transcript as it grows, and whether the result was up yet
      window.seenLive = [];
      const live = document.getElementById('live-text');
      new MutationObserver(() => window.seenLive.push({
        text: live.textContent, results: !document.getElementById('results').hidden,
      })).observe(live, { childList: true, characterData: true, subtree: true });
    });
    await page.click('#upload-button');
    await page.locator('#progress').waitFor({ state: 'visible' });
    await page.screenshot({ path: path.join(OUT, 'progress.png') }).catch(() => {});
    await page.locator('#results').waitFor({ state: 'visible', timeout: 180000 });
    assert.equal(await page.locator('#progress').isVisible(), false);
    const steps = await page.evaluate(() => window.seenSteps);
    assert.ok(steps.some((s) => /^(Decoding|Preprocessing|Transcribing|Analyzing|Aligning|Waiting)/.test(s)),
      `no server step shown: ${steps.join(' | ')}`);
    assert.ok(steps.some((s) => /\(100%\) \[100\]$/.test(s)) || steps.some((s) => /\[(2[5-9]|[3-9]\d)\]$/.test(s)),
      `the bar never moved: ${steps.join(' | ')}`);
    t.diagnostic(`steps shown: ${[...new Set(steps)].join(' | ')}`);
    // followed through the event stream, with the text before the speakers
    assert.equal(await page.evaluate(() => document.body.dataset.live), 'events');
    const live = await page.evaluate(() => window.seenLive);
    const early = live.filter((l) => l.text && !l.results);
    assert.ok(early.length > 0, `no partial transcript before the result: ${JSON.stringify(live)}`);
    assert.ok(WORDS.some((w) => early[early.length - 1].text.toLowerCase().includes(w)),
      `partial text: ${early[early.length - 1].text}`);
    t.diagnostic(`partial transcript shown before the result: "${early[early.length - 1].text.slice(0, 80)}…"`);
  });

  await t.test('two speakers, each with a lane, and the expected words', async () => {
    assert.equal(await page.locator('#speakers li').count(), 2);
    assert.equal(await page.locator('#timeline .lane-track').count(), 2);
    const names = await page.locator('#transcript .turn-speaker').allInnerTexts();
    assert.deepEqual([...new Set(names)].sort(), ['Speaker 1', 'Speaker 2']);
    const colours = await page.locator('#transcript .turn-speaker').evaluateAll((els) => [...new Set(els.map((e) => getComputedStyle(e).color))]);
    assert.equal(colours.length, 2, `one colour per speaker: ${colours}`);
    const text = (await page.locator('#transcript').innerText()).toLowerCase();
    for (const w of WORDS) assert.ok(text.includes(w), `"${w}" not in the transcript:\n${text}`);
    assert.match(await page.locator('#results-summary').innerText(), /2 speakers/);
  });

  await t.test('clicking a segment seeks the player and highlights it', async () => {
    assert.equal(await page.locator('#player').isVisible(), true);
    await page.waitForFunction(() => document.getElementById('player').readyState >= 1, null, { timeout: 20000 });
    const segs = page.locator('#transcript .seg');
    const n = await segs.count();
    assert.ok(n >= 3, `only ${n} segments`);
    const target = segs.nth(Math.floor(n / 2));
    const start = parseFloat(await target.getAttribute('data-start'));
    assert.ok(start > 1, `segment start ${start}`);
    await target.click();
    await page.waitForFunction((s) => Math.abs(document.getElementById('player').currentTime - s) < 1.5, start, { timeout: 10000 });
    await page.evaluate(() => document.getElementById('player').pause());
    const now = await page.evaluate(() => document.getElementById('player').currentTime);
    assert.ok(now >= start - 0.05 && now < start + 1.5, `currentTime ${now}, segment starts at ${start}`);
    // the highlighted segment is the clicked one (or, if playback ran on, the next)
    const active = await page.locator('#transcript .seg.active').getAttribute('data-start');
    assert.ok(active !== null && parseFloat(active) >= start, `active segment ${active}`);
    // keyboard: Enter on the first segment seeks to its start
    const first = segs.first();
    const s0 = parseFloat(await first.getAttribute('data-start'));
    await first.focus();
    await page.keyboard.press('Enter');
    await page.waitForFunction((s) => Math.abs(document.getElementById('player').currentTime - s) < 1.5, s0, { timeout: 10000 });
    await page.evaluate((s) => { const p = document.getElementById('player'); p.pause(); p.currentTime = s; }, start);
    await page.waitForFunction(() => document.querySelector('#transcript .seg.active') !== null);
  });

  await t.test('words: spans with times, the spoken word highlighted, a click seeks to a word', async () => {
    const words = wordsOf(await resultOf(page));
    assert.ok(words.length > 20, `only ${words.length} words in the result`);
    const spans = await page.locator('#transcript .seg .word').evaluateAll((els) => els.map((e) => ({
      text: e.textContent, start: parseFloat(e.dataset.start), end: parseFloat(e.dataset.end),
      title: e.title, overlapped: e.classList.contains('overlapped'), unsure: e.classList.contains('unsure') })));
    assert.equal(spans.length, words.length, 'one span per word of the result');
    spans.forEach((s, k) => {
      assert.equal(s.text, words[k].word.trim(), `word ${k}`);
      assert.ok(s.start === words[k].start && s.end === words[k].end, `word ${k} "${s.text}": ${s.start}-${s.end}`);
      // marks: overlapped speech and low probability, said in the tooltip too
      assert.equal(s.overlapped, !!words[k].overlapped, `word ${k} "${s.text}" overlapped`);
      assert.equal(/overlapped speech/.test(s.title), !!words[k].overlapped, `word ${k} title: ${s.title}`);
      assert.equal(s.unsure, words[k].probability < 0.5, `word ${k} "${s.text}" p=${words[k].probability}`);
      assert.match(s.title, /^Play from \d+:\d\d\.\d/);
    });
    t.diagnostic(`${words.length} words, ${words.filter((w) => w.overlapped).length} overlapped, ${words.filter((w) => w.probability < 0.5).length} under 0.5`);

    // click a word (not the first of its sentence): currentTime goes to its start
    const kc = spans.findIndex((s, k) => k > 0 && s.start > 1 && /^conference/i.test(s.text));
    assert.ok(kc > 0, 'no "conference" word');
    await page.evaluate(() => {
      const p = document.getElementById('player');
      p.pause();
      p.addEventListener('seeking', () => { window.seekedTo = p.currentTime; }, { once: true });
    });
    await page.locator('#transcript .word').nth(kc).click();
    await page.waitForFunction(() => window.seekedTo !== undefined, null, { timeout: 10000 });
    await page.evaluate(() => document.getElementById('player').pause());
    const to = await page.evaluate(() => window.seekedTo);
    assert.ok(Math.abs(to - spans[kc].start) < 0.002, `clicking "${spans[kc].text}" (${spans[kc].start}) set currentTime to ${to}`);

    // the middle of every word (that no other word covers) highlights exactly that word, and its sentence
    const wrong = await page.evaluate(() => {
      const p = document.getElementById('player');
      const all = [...document.querySelectorAll('#transcript .seg .word')];
      const bad = []; let checked = 0;
      all.forEach((w, k) => {
        const s = parseFloat(w.dataset.start), e = parseFloat(w.dataset.end), mid = (s + e) / 2;
        if (e - s < 0.05 || all.some((o, j) => j !== k && parseFloat(o.dataset.start) <= mid && mid < parseFloat(o.dataset.end))) return;
        checked += 1;
        p.currentTime = mid;
        p.dispatchEvent(new Event('timeupdate'));
        const now = document.querySelectorAll('#transcript .word.now');
        const seg = document.querySelector('#transcript .seg.active');
        if (now.length !== 1 || now[0] !== w || seg !== w.closest('.seg')) {
          bad.push(`${w.textContent}@${mid.toFixed(2)} -> ${[...now].map((x) => x.textContent).join('+') || 'none'}`);
        }
      });
      return { checked, bad };
    });
    t.diagnostic(`highlight checked at the middle of ${wrong.checked} words`);
    assert.ok(wrong.checked > words.length / 2, `only ${wrong.checked} words checked`);
    assert.deepEqual(wrong.bad, []);

    // a known word, through the audio element's own events: seek into "budget", no event dispatched by hand
    const kb = spans.findIndex((s) => /^budget/i.test(s.text));
    assert.ok(kb >= 0, 'no "budget" word');
    const mid = (spans[kb].start + spans[kb].end) / 2;
    await page.evaluate(() => { document.querySelector('#transcript .word.now')?.classList.remove('now'); });
    await page.evaluate((m) => { document.getElementById('player').currentTime = m; }, mid);
    await page.waitForFunction((k) => {
      const now = document.querySelectorAll('#transcript .word.now');
      return now.length === 1 && now[0] === document.querySelectorAll('#transcript .seg .word')[k];
    }, kb, { timeout: 10000 });
    // and while playing, the highlight moves on word by word
    await page.evaluate(() => document.getElementById('player').play());
    await page.waitForFunction((k) => {
      const now = document.querySelector('#transcript .word.now');
      return now && [...document.querySelectorAll('#transcript .seg .word')].indexOf(now) > k;
    }, kb, { timeout: 10000 });
    await page.evaluate((m) => { const p = document.getElementById('player'); p.pause(); p.currentTime = m; }, mid);
    await page.waitForFunction((k) => document.querySelector('#transcript .word.now') === document.querySelectorAll('#transcript .seg .word')[k], kb);
    await page.locator('#transcript .word.now').scrollIntoViewIfNeeded();
    await page.locator('#transcript').screenshot({ path: path.join(OUT, 'words.png') });
  });

  await t.test('renaming a speaker changes the transcript and the exports', async () => {
    await page.fill('#speakers li:first-child input', 'Alice');
    const names = await page.locator('#transcript .turn-speaker').allInnerTexts();
    assert.ok(names.includes('Alice') && !names.includes('Speaker 1'), names.join(','));
    const ex = await page.evaluate(() => window.colloquy.exports());
    assert.match(ex.srt, /^1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n(Alice|Speaker 2): /);
    assert.match(ex.vtt, /^WEBVTT\n\n\d\d:\d\d:\d\d\.\d{3} --> /);
    assert.match(ex.vtt, /<v Alice>/);
    assert.match(ex.txt, /\] Alice: /);
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#dl-srt')]);
    assert.match(download.suggestedFilename(), /\.srt$/);
  });

  await t.test('SRT/VTT cues: one speaker each (against the result\'s words), short, times from the words, in order', async () => {
    const result = await resultOf(page);
    const words = wordsOf(result);
    const names = Object.fromEntries(await page.locator('#speakers input').evaluateAll((els) => els.map((e) => [e.dataset.speaker, e.value.trim()])));
    assert.ok(Object.values(names).includes('Alice'), JSON.stringify(names));
    const ex = await page.evaluate(() => window.colloquy.exports());
    fs.writeFileSync(path.join(OUT, 'subtitles.srt'), ex.srt);
    fs.writeFileSync(path.join(OUT, 'result.json'), JSON.stringify(result, null, 1));
    const cues = parseSrt(ex.srt);
    checkCues(cues, names);
    const overlapped = words.some((w) => w.overlapped);
    let k = 0; let prev = null; let longest = 0;
    for (const c of cues) {
      // the cue's text is the next words of the result, all of one speaker, the one named
      const used = []; let acc = '';
      while (k < words.length && norm(acc).length < c.text.length) { acc += words[k].word; used.push(words[k]); k += 1; }
      assert.equal(norm(acc), c.text, `cue ${c.n} is not the next words of the result`);
      const speakers = [...new Set(used.map((w) => w.speaker))];
      assert.equal(speakers.length, 1, `cue ${c.n} mixes ${speakers.join(' and ')}: ${c.text}`);
      assert.equal(c.name, names[speakers[0]], `cue ${c.n} is ${speakers[0]}'s words but says ${c.name}`);
      const last = used[used.length - 1];
      assert.ok(Math.abs(c.start - used[0].start) < 0.002, `cue ${c.n} starts at ${c.start}, its first word at ${used[0].start}`);
      assert.ok(c.end >= last.end - 0.002 && c.end <= Math.max(last.end, c.start + 0.01) + 0.002, `cue ${c.n} ends at ${c.end}, its last word at ${last.end}`);
      if (used.length > 1) {
        assert.ok(c.text.length + c.name.length + 2 <= CUE_CHARS, `cue ${c.n} has ${c.text.length} characters: ${c.text}`);
        assert.ok(c.end - c.start <= CUE_SECONDS + 0.002, `cue ${c.n} lasts ${c.end - c.start} s`);
      }
      if (prev && !overlapped) assert.ok(c.start >= prev.end - 0.002, `cue ${c.n} starts before cue ${prev.n} ends`);
      longest = Math.max(longest, ...c.lines.map((l) => l.length));
      prev = c;
    }
    assert.equal(k, words.length, 'the cues hold every word');
    t.diagnostic(`${cues.length} SRT cues from ${result.aligned_segments.length} utterances; longest line ${longest} characters`);
    // VTT: the same cues, each with its speaker's voice tag
    const vtt = ex.vtt.replace(/^WEBVTT\n\n/, '').trim().split(/\n\n+/);
    assert.equal(vtt.length, cues.length);
    vtt.forEach((b, i) => assert.ok(b.split('\n')[1].startsWith(`<v ${cues[i].name}>`), b));
  });

  await t.test('screenshots: desktop and phone width', async () => {
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: path.join(OUT, 'results.png'), fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: path.join(OUT, 'results-phone.png'), fullPage: true });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px at 390 px`);
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  await t.test('a result without words (an older job) renders from its text; the server\'s exports still cut', async () => {
    await page.route('**/api/results/*', async (route) => {
      // the exports (?format=) are the server's own, made from the stored result
      if (/[?&]format=/.test(route.request().url())) { await route.continue(); return; }
      const res = await route.fetch();
      const body = await res.json();
      for (const s of [...(body.segments || []), ...(body.aligned_segments || [])]) delete s.words;
      await route.fulfill({ response: res, json: body });
    });
    await page.click('#jobs-refresh');
    await page.locator('#job-list .job').first().getByRole('button', { name: /^Open/ }).click();
    await page.waitForFunction(() => document.querySelectorAll('#transcript .seg').length > 0
      && document.querySelectorAll('#transcript .word').length === 0, null, { timeout: 10000 });
    const text = (await page.locator('#transcript').innerText()).toLowerCase();
    for (const w of WORDS) assert.ok(text.includes(w), `"${w}" not in the transcript:\n${text}`);
    const names = Object.fromEntries(await page.locator('#speakers input').evaluateAll((els) => els.map((e) => [e.dataset.speaker, e.value.trim()])));
    const srt = (await page.evaluate(() => window.colloquy.exports())).srt;
    fs.writeFileSync(path.join(OUT, 'subtitles-without-words.srt'), srt);
    const cues = parseSrt(srt);
    checkCues(cues, names);
    for (const c of cues) if (c.text.includes(' ')) assert.ok(c.text.length + c.name.length + 2 <= CUE_CHARS, `cue ${c.n}: ${c.text}`);
    await page.unroute('**/api/results/*');
  });

  await t.test('"Remember" saves a named voice on the server; the result names it from then on', async () => {
    const first = page.locator('#speakers li').first();
    assert.equal(await first.locator('input').inputValue(), 'Alice');
    await first.locator('[data-remember]').click();
    await page.locator('#speakers li [data-remember]', { hasText: 'Rename in library' }).first().waitFor({ timeout: 30000 });
    const result = await resultOf(page);
    assert.deepEqual((result.known_speakers || []).map((k) => k.speaker), ['Alice']);
    const lib = await page.evaluate(() => fetch('/api/speakers').then((r) => r.json()));
    assert.deepEqual(lib.speakers.map((s) => s.name), ['Alice']);
    const names = await page.locator('#transcript .turn-speaker').allInnerTexts();
    assert.ok(names.includes('Alice'), names.join(','));
  });

  await t.test('the job list shows the job; delete removes it', async () => {
    await page.click('#jobs-refresh');
    const item = page.locator('#job-list .job').first();
    await item.waitFor();
    assert.match(await item.innerText(), /Done/);
    await item.getByRole('button', { name: /^Delete/ }).click();
    await page.locator('#jobs-empty').waitFor({ state: 'visible' });
    const r = await page.evaluate(() => fetch('/api/jobs').then((x) => x.json()));
    assert.equal(r.total, 0);
    assert.equal(await page.locator('#results').isVisible(), false);
  });

  await t.test('with the event stream blocked, the page polls and the transcript still arrives', async () => {
    let blocked = 0;
    await page.route('**/api/jobs/*/events', (route) => { blocked += 1; return route.abort(); });
    await page.setInputFiles('#file-input', clip.file);
    await page.selectOption('#num-speakers', '2');
    await page.click('#upload-button');
    await page.locator('#transcript .seg').first().waitFor({ timeout: 180000 });
    assert.ok(blocked >= 1, 'the page tried the stream');
    assert.equal(await page.evaluate(() => document.body.dataset.live), 'polling');
    const text = (await page.locator('#transcript').innerText()).toLowerCase();
    for (const w of WORDS) assert.ok(text.includes(w), `"${w}" not in the transcript:\n${text}`);
    assert.equal(await page.locator('#speakers li').count(), 2);
    // the voice remembered earlier is named by the server in this new job
    const names = await page.locator('#transcript .turn-speaker').allInnerTexts();
    assert.ok(names.includes('Alice'), `the known voice is named: ${[...new Set(names)]}`);
    await page.unroute('**/api/jobs/*/events');
  });

  const unexpected = errors.filter((e) => !/ERR_FAILED/.test(e));   // the blocked stream's own console line
  assert.deepEqual(unexpected, [], `errors in the page: ${unexpected.join('\n')}`);
  await page.close();
});

test('with API keys on, the page asks for a key, keeps it for the tab and shows only that key\'s jobs', { skip, timeout: 240000 }, async (t) => {
  // keys are made on the storage folder before the server holds it, as `colloquy keys create` is used
  const storage = path.join(tmp, 'storage-keys');
  const key = (name) => {
    const r = spawnSync(BIN, ['keys', '--storage', storage, 'create', '--name', name], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.match(lines[lines.length - 1], /^cq_[0-9a-f]{64}$/, 'the key alone on the last line');
    return lines[lines.length - 1];
  };
  const alice = key('alice'); const bob = key('bob');
  const { proc, url } = await startServer('storage-keys', 'server-keys.log', { COLLOQUY__SERVER__AUTH: 'keys' });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  try {
    await page.goto(url);
    await page.locator('#key-card').waitFor({ state: 'visible' });
    assert.match(await page.locator('#jobs-empty').innerText(), /API key/);
    await page.fill('#key-input', 'cq_wrong');
    await page.click('#key-button');
    await page.locator('#key-error').waitFor({ state: 'visible' });
    assert.match(await page.locator('#key-error').innerText(), /not accepted/);
    await page.fill('#key-input', alice);
    await page.click('#key-button');
    await page.locator('#key-card').waitFor({ state: 'hidden' });
    assert.equal(await page.evaluate(() => sessionStorage.getItem('colloquy.apiKey')), alice);
    assert.equal(await page.evaluate(() => localStorage.getItem('colloquy.apiKey')), null, 'never in localStorage');
    await page.setInputFiles('#file-input', clip.file);
    await page.selectOption('#num-speakers', '2');
    await page.click('#upload-button');
    await page.locator('#transcript .seg').first().waitFor({ timeout: 180000 });
    assert.equal(await page.evaluate(() => document.body.dataset.live), 'events', 'the stream takes the key too');
    const text = (await page.locator('#transcript').innerText()).toLowerCase();
    for (const w of WORDS) assert.ok(text.includes(w), `"${w}" not in the transcript`);
    // a reload keeps the key for this tab; the list shows alice's job
    await page.reload();
    await page.locator('#job-list .job').first().waitFor();
    assert.equal(await page.locator('#key-card').isVisible(), false);
    // bob's key sees none of it, and the server refuses a request without a key
    const seen = await page.evaluate(async (k) => {
      const asBob = await fetch('/api/jobs', { headers: { Authorization: `Bearer ${k}` } }).then((r) => r.json());
      const none = await fetch('/api/jobs').then((r) => r.status);
      return { bob: asBob.total, none };
    }, bob);
    assert.deepEqual(seen, { bob: 0, none: 401 });
    await page.click('#forget-key');
    await page.locator('#key-card').waitFor({ state: 'visible' });
    assert.equal(await page.evaluate(() => sessionStorage.getItem('colloquy.apiKey')), null);
    assert.equal(await page.locator('#results').isVisible(), false, 'the transcript is gone with the key');
    await page.screenshot({ path: path.join(OUT, 'key-prompt.png') });
    assert.deepEqual(errors, [], `errors in the page: ${errors.join('\n')}`);
  } finally {
    await page.close();
    await stopServer(proc);
  }
});
