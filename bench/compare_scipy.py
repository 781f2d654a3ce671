#!/usr/bin/env python3
"""compare_scipy.py — optional: scipy's RK45 counts on bench_ode's harmonic and
Lotka-Volterra cases.

Not a project dependency. Needs python3-scipy (Debian: apt-get install -y
python3-scipy; run it with that python, /usr/bin/python3). Prints one JSON line per case, in the same shape as
bench_ode's "harmonic" and "lotka_volterra" lines, so that dopri5's evaluation counts can be put
side by side with another Dormand-Prince 5(4) implementation: scipy's RK45
uses the same RMS error norm, controller constants (safety 0.9, factors
0.2..10) and Hairer-Norsett-Wanner initial step (first_step left automatic).
scipy's nfev, like cnf's nfe, includes f(t0) and the initial-step probe.
"""
import json
import math

from scipy.integrate import solve_ivp


def harmonic(t, y):
    return [y[1], -y[0]]


def lotka_volterra(t, y):
    return [1.5 * y[0] - y[0] * y[1], y[0] * y[1] - 3.0 * y[1]]


def main():
    for label, t1 in (("10", 10.0), ("2pi", 2.0 * math.pi)):
        for tol in (1e-6, 1e-8):
            sol = solve_ivp(harmonic, (0.0, t1), [1.0, 0.0], method="RK45",
                            rtol=tol, atol=tol)
            accepted = len(sol.t) - 1
            attempts = (sol.nfev - 2) // 6  # six new stages per attempt (FSAL)
            y = sol.y[:, -1]
            err = max(abs(y[0] - math.cos(t1)), abs(y[1] + math.sin(t1)))
            print(json.dumps({
                "case": "harmonic", "method": "scipy RK45", "t1": label,
                "rtol": tol, "atol": tol, "nfe": int(sol.nfev),
                "accepted": accepted, "rejected": attempts - accepted,
                "max_error": float("%.3g" % err),
                "scipy": __import__("scipy").__version__}))
    for tol in (1e-6, 1e-8):
        sol = solve_ivp(lotka_volterra, (0.0, 10.0), [10.0, 5.0], method="RK45",
                        rtol=tol, atol=tol)
        accepted = len(sol.t) - 1
        attempts = (sol.nfev - 2) // 6
        print(json.dumps({
            "case": "lotka_volterra", "method": "scipy RK45", "t1": "10",
            "rtol": tol, "atol": tol, "nfe": int(sol.nfev),
            "accepted": accepted, "rejected": attempts - accepted,
            "y1": [float("%.10g" % v) for v in sol.y[:, -1]]}))


if __name__ == "__main__":
    main()
