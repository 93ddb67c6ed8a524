"""Issue 12 item 1: `cp` of many files named in non-Latin scripts into a write-back mount.
Every file completes (no "an object of another record already exists"), its key keeps
its name (include/assetfs/naming.h), and its bytes are behind its key, including names
that the key rule makes alike (differing only in '#' vs '%', '?' vs '*') and NFC vs NFD
spellings of one visible name, which are two files and two keys."""
import hashlib
import os
import random
import re
import subprocess
import time
import unicodedata

from procs import wait_for

N = 500
UNSAFE = set('\\{}^%`[]"<>#|?*')
WORDS = ["東京", "大阪", "写真", "旅行", "한국어", "사진", "фото", "Москва", "صورة", "مرحبا",
         "תמונה", "שלום", "नमस्ते", "चित्र", "ελληνικά", "ქართული", "ภาษาไทย", "😀",
         "👨\u200d👩\u200d👧", "🇯🇵", "Café", "naïve", "Ñandú"]


def key_stem(name):
    """The key rule for these names (printable; no C1, no noncharacters): a run of
    unsafe characters becomes one '-', a trailing one is dropped."""
    out = re.sub("[" + re.escape("".join(sorted(UNSAFE))) + "]+", "-", name)
    if out != name and out.endswith("-") and len(out) > 1 and re.search(
            "[" + re.escape("".join(sorted(UNSAFE))) + "]$", name):
        out = out[:-1]
    return out


def names():
    rnd = random.Random(12)
    out = []
    for i in range(40):  # alike after replacement: '#' / '%' / '?' / '*'
        w = WORDS[i % len(WORDS)]
        out += [f"{w}{c}{i:02d}.txt" for c in "#%?*"]
    for i in range(30):  # NFC and NFD of one visible name
        nfc = unicodedata.normalize("NFC", f"Café {WORDS[i % len(WORDS)]} é {i}.txt")
        out += [nfc, unicodedata.normalize("NFD", nfc)]
    while len(out) < N:
        parts = [rnd.choice(WORDS) for _ in range(rnd.randint(1, 3))]
        sep = rnd.choice([" ", "_", "-", "・", ""])
        out.append(f"{sep.join(parts)} {len(out)}{rnd.choice(['.txt', '.bin', '.日本', ''])}")
    assert len(set(out)) == N
    return out


def test_cp_500_non_latin_names_writeback(broker, start_mount, db, s3, bucket, tmp_path):
    src = tmp_path / "src" / "uni"
    src.mkdir(parents=True)
    want = {}
    for i, name in enumerate(names()):
        data = os.urandom(200 + i)
        (src / name).write_bytes(data)
        want["uni/" + name] = hashlib.sha256(data).hexdigest()
    m = start_mount("writeback", "upload_workers=8")
    t0 = time.monotonic()
    subprocess.run(["cp", "-r", str(src), m.p("")], check=True, timeout=120)
    t_cp = time.monotonic() - t0

    def done():
        n = db.CosyncAsset.count_documents({"uid": m.uid, "status": "active"})
        bad = db.CosyncAssetUpload.count_documents({"status": "error"})
        assert bad == 0, list(db.CosyncAssetUpload.find({"status": "error"}, {"error": 1,
                                                                               "filePath": 1}))
        return n >= N

    wait_for(done, 180, f"{N} assets")
    t_done = time.monotonic() - t0
    assets = {a["filePath"]: a for a in db.CosyncAsset.find({"uid": m.uid})}
    assert set(assets) == set(want)
    assert all(a["status"] == "active" for a in assets.values())
    assert db.CosyncAssetUpload.count_documents({"status": "error"}) == 0
    paths = set()
    for fp, a in assets.items():
        name = fp.split("/", 1)[1]
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem:
            stem, ext = name, None
        key = a["path"]
        expect = f"{m.uid}/uni/{key_stem(stem)}-"
        assert key.startswith(expect), (fp, key)
        rest = key[len(expect):]
        ts, _, kext = rest.partition(".")
        assert ts.isdigit() and len(ts) == 13, key
        assert (kext or None) == (key_stem(ext) if ext else None), key
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == want[fp], fp
        paths.add(key)
    assert len(paths) == N
    # And the mount lists every name as written (NFC and NFD both).
    assert set(os.listdir(m.p("uni"))) == {fp.split("/", 1)[1] for fp in want}
    print(f"{N} files: cp {t_cp:.1f} s, all completed after {t_done:.1f} s")
    # The broker's MongoDB commands for these uploads (logged at stop): one key-claim
    # insert per upload, and a re-plan only where a key met another record's.
    broker.proc.terminate()
    assert broker.proc.wait(timeout=30) == 0
    log = broker.log()
    w = re.search(r"sent by the workers: (\d+) \(.*insert (\d+)", log)
    d = re.search(r"sent by the dispatcher: (\d+)", log)
    total, inserts = int(w.group(1)), int(w.group(2))
    assert N <= inserts <= N + 20, log[-2000:]
    print(f"MongoDB commands per file: workers {total / N:.2f} (key-claim inserts "
          f"{inserts / N:.2f}), dispatcher {int(d.group(1)) / N:.2f}")
