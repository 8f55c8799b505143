#!/usr/bin/env python3
"""Known speakers (#14) against the real server and models, on the real
recordings of ../shared/data (skipped with a message without them).

AMI speakers recur across excerpts: the two dev00 speakers are named from
dev00's job (each diarized speaker gets the name of the reference speaker
it overlaps most, as a user listening to it would name it) and must carry
their names in dev01; tst00's speakers are named from its job and must
carry them in tst01 (those who speak at least 1 s); no dev name may appear
in tst00/tst01, nor a tst name in dev01 run again afterwards. Then the
LibriVox reader is enrolled from one clip (`POST /api/speakers`, multipart
name + file) and must carry the
name in realmix1's reader turns, and no other voice there.

Prints every job's speakers (label, reference speaker, seconds, name given,
confidence) and the false accepts and false rejects; ends with
`speakers: PASS ...` or `speakers: FAIL ...` (exit 1)."""

import json
import os
import shutil
import sys
import tempfile

from suite import ROOT, Checks, Server

DATA = os.path.join(ROOT, "..", "shared", "data")
check = Checks()


def rttm(path, rec):
    out = []
    for line in open(path):
        f = line.split()
        if len(f) >= 8 and f[0] == "SPEAKER" and f[1] == rec:
            out.append((f[7], float(f[3]), float(f[3]) + float(f[4])))
    return out


def overlap(a0, a1, b0, b1):
    return max(0.0, min(a1, b1) - max(a0, b0))


def run(srv, rel, query=""):
    data = open(os.path.join(DATA, rel), "rb").read()
    code, up, _ = srv.upload(os.path.basename(rel), data, query)
    assert code == 200, up
    done = srv.wait_jobs([up["job_id"]])
    st = done.get(up["job_id"], {})
    check(f"{rel}: completed", st.get("status") == "completed", str(st)[:200])
    code, result, _ = srv.request("GET", f"/api/results/{up['job_id']}")
    return up["job_id"], result


def speakers(result, ref_turns):
    """{shown speaker: (label, reference person it overlaps most, that person's seconds there, confidence)}"""
    known = {k["speaker"]: k for k in result.get("known_speakers", [])}
    out = {}
    for shown in sorted({t["speaker"] for t in result["speaker_turns"]}):
        mine = [(t["start"], t["end"]) for t in result["speaker_turns"] if t["speaker"] == shown]
        by = {}
        for p, s, e in ref_turns:
            by[p] = by.get(p, 0.0) + sum(overlap(s, e, a, b) for a, b in mine)
        person = max(by, key=by.get) if by and max(by.values()) > 0 else "?"
        spoken = sum(e - s for p, s, e in ref_turns if p == person)
        k = known.get(shown)
        out[shown] = (k["label"] if k else shown, person, spoken, k["speaker_confidence"] if k else None)
    return out


def enrol_all(srv, job, table):
    for shown, (label, person, spoken, _) in table.items():
        if person == "?":
            continue
        code, sp, _ = srv.request("POST", "/api/speakers", json.dumps(
            {"name": person, "job_id": job, "speaker": label}).encode(), {"Content-Type": "application/json"})
        check(f"enrol {person} from {label}", code == 201, str(sp)[:200])


def main():
    ami = os.path.join(DATA, "diarization", "ami.rttm")
    if not os.path.exists(ami):
        print("speakers: SKIP ../shared/data is missing (the AMI excerpts and realmix1 are needed)")
        return
    tmp = tempfile.mkdtemp(prefix="colloquy-speakers-")
    srv = Server(os.path.join(tmp, "storage"), suite="speakers")
    lines, fa, fr, named_ok = [], 0, 0, 0
    try:
        def show(name, table):
            for shown, (label, person, spoken, conf) in table.items():
                lines.append(f"  {name:10} {label}  ref {person:8} {spoken:5.1f}s  shown as {shown!r}"
                             + (f" ({conf:.3f})" if conf is not None else ""))

        def judge(name, table, enrolled, must):
            """Counts false accepts (a name on someone else) and false rejects
            (an enrolled person in `must` left unnamed)."""
            nonlocal fa, fr, named_ok
            for shown, (label, person, spoken, conf) in table.items():
                if shown != label:
                    if shown == person:
                        named_ok += 1
                    else:
                        fa += 1
                        check(f"{name}: {label} is {person}, not {shown}", False, "")
                elif person in enrolled and person in must:
                    fr += 1
                    check(f"{name}: {person} ({spoken:.1f}s) carries its name", False, "")

        ref = lambda rec: rttm(ami, rec)
        dev00, r = run(srv, "diarization/ami_dev00.wav", "?num_speakers=2")
        t = speakers(r, ref("ami_dev00")); show("dev00", t)
        check("dev00: two unnamed speakers before anyone is enrolled", all(s == v[0] for s, v in t.items()), str(t))
        enrol_all(srv, dev00, t)
        dev = {"MEE009", "MEE012"}
        _, r = run(srv, "diarization/ami_dev01.wav", "?num_speakers=2")
        t = speakers(r, ref("ami_dev01")); show("dev01", t)
        judge("dev01", t, dev, dev)
        check("dev01: MEE009 and MEE012 both named", {s for s in t} >= dev, str(list(t)))
        tst00, r = run(srv, "diarization/ami_tst00.wav", "?num_speakers=4")
        t = speakers(r, ref("ami_tst00")); show("tst00", t)
        check("tst00: no dev name", not (set(t) & dev), str(list(t)))
        enrol_all(srv, tst00, speakers(r, ref("ami_tst00")))
        tst = {v[1] for v in t.values()} - {"?"}
        _, r = run(srv, "diarization/ami_tst01.wav")
        t = speakers(r, ref("ami_tst01")); show("tst01", t)
        speaking = {p for p, s, e in ref("ami_tst01")
                    if sum(e2 - s2 for p2, s2, e2 in ref("ami_tst01") if p2 == p) >= 1.0}
        judge("tst01", t, tst, speaking)
        check("tst01: no dev name", not (set(t) & dev), str(list(t)))
        check(f"tst01: every enrolled speaker of 1 s or more ({sorted(speaking & tst)}) named",
              (speaking & tst) <= set(t), str(list(t)))
        _, r = run(srv, "diarization/ami_dev01.wav", "?num_speakers=2")
        t = speakers(r, ref("ami_dev01")); show("dev01 again", t)
        check("dev01 again: no tst name", not (set(t) & tst), str(list(t)))
        judge("dev01 again", t, dev, dev)

        # a reference clip (multipart name + file): enrolled, its job gone
        b = "speakers-boundary-1f3a"
        clip = open(os.path.join(DATA, "asr", "librivox_ss01_0870.wav"), "rb").read()
        body = (f'--{b}\r\nContent-Disposition: form-data; name="name"\r\n\r\nreader\r\n'
                f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="librivox_ss01_0870.wav"\r\n'
                "Content-Type: audio/wav\r\n\r\n").encode() + clip + f"\r\n--{b}--\r\n".encode()
        code, sp, _ = srv.request("POST", "/api/speakers", body, {"Content-Type": f"multipart/form-data; boundary={b}"})
        check("enrol the reader from one clip (multipart)", code == 201 and sp["prints"][0]["source"]["kind"] == "clip",
              str(sp)[:200])
        code, jobs, _ = srv.request("GET", "/api/jobs")
        check("the clip's job is gone", not any(j["filename"] == "librivox_ss01_0870.wav" for j in jobs["jobs"]), "")
        mix = rttm(os.path.join(DATA, "mix", "realmix1.rttm"), "realmix1")
        _, r = run(srv, "mix/realmix1.wav", "?num_speakers=6")
        t = speakers(r, mix); show("realmix1", t)
        judge("realmix1", t, {"reader"}, {"reader"})
        reader_time = sum(e - s for p, s, e in mix if p == "reader")
        named_time = sum(overlap(s, e, x["start"], x["end"]) for p, s, e in mix if p == "reader"
                         for x in r["speaker_turns"] if x["speaker"] == "reader")
        check("realmix1: the reader's turns carry the name (90% of their time)", named_time >= 0.9 * reader_time,
              f"{named_time:.1f} of {reader_time:.1f} s")
        others = [x for x in r["speaker_turns"] if x["speaker"] == "reader"
                  and sum(overlap(s, e, x["start"], x["end"]) for p, s, e in mix if p != "reader") > 0.5 * (x["end"] - x["start"])]
        check("realmix1: no other voice is called reader", not others, str(others)[:200])
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n".join(lines))
    check.finish("speakers", f"{named_ok} speakers named right, {fa} false accepts, {fr} false rejects "
                 f"(threshold from config/default.toml)")


if __name__ == "__main__":
    main()
