#!/usr/bin/env python3
"""login-service RSS and throughput under a burst of correct logins (issue #11, item 4a).

Usage: bench/login_rss.py BINARY LOGINS CLIENTS [HASH_CONCURRENCY]
Starts BINARY on a free local port with a fresh SQLite database, adds one user, sends LOGINS
correct POST /login from CLIENTS keep-alive connections, and prints one JSON line: logins/s,
RSS idle / after, VmHWM (peak) from /proc/PID/status. Stops the server it started.
"""
import base64, http.client, json, os, subprocess, sys, tempfile, threading, time, socket

binary, n, par = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conc = sys.argv[4] if len(sys.argv) > 4 else "2"
d = tempfile.mkdtemp(prefix="login-rss-")
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
env = {"DATABASE_URL": f"sqlite://{d}/t.sqlite", "JWT_SECRET": "x" * 40, "RUST_LOG": "warn",
       "HTTP_ADDR": f"127.0.0.1:{port}", "HASH_CONCURRENCY": conc, "PATH": os.environ["PATH"],
       "IP_FAILURE_THRESHOLD": "100000", "LOGIN_MAX_QUEUE_WAIT": "9s"}  # every login hashed
subprocess.run([binary, "migrate"], env=env, check=True, capture_output=True)
subprocess.run([binary, "user", "add", "bench@example.com", "--password-stdin"], env=env,
               input=b"pw\n", check=True, capture_output=True)
p = subprocess.Popen([binary, "serve"], env=env)
def status():
    out = {}
    for line in open(f"/proc/{p.pid}/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "Threads"):
            out[k] = int(v.split()[0])
    return out
deadline = time.time() + 20
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2); c.request("GET", "/healthz"); c.getresponse().read(); break
    except Exception:
        if time.time() > deadline: raise
        time.sleep(0.1)
idle = status()
auth = "Basic " + base64.b64encode(b"bench@example.com:pw").decode()
lock = threading.Lock(); left = [n]; errors = [0]; peak = [0]
def worker():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while True:
        with lock:
            if left[0] == 0: return
            left[0] -= 1
        c.request("POST", "/login", headers={"Authorization": auth})
        r = c.getresponse(); r.read()
        if r.status != 200:
            with lock: errors[0] += 1
def sampler():
    while p.poll() is None and not done[0]:
        peak[0] = max(peak[0], status()["VmRSS"]); time.sleep(0.05)
done = [False]
st = threading.Thread(target=sampler); st.start()
t0 = time.time()
ts = [threading.Thread(target=worker) for _ in range(par)]
[t.start() for t in ts]; [t.join() for t in ts]
el = time.time() - t0
done[0] = True; st.join()
after = status()
p.terminate(); p.wait()
print(json.dumps({"binary": binary, "logins": n, "parallel": par, "hash_concurrency": conc, "errors": errors[0],
                  "seconds": round(el, 1), "logins_per_s": round(n / el, 1),
                  "idle_rss_mib": round(idle["VmRSS"] / 1024, 1), "after_rss_mib": round(after["VmRSS"] / 1024, 1),
                  "vmhwm_mib": round(after["VmHWM"] / 1024, 1), "threads": after["Threads"]}))
