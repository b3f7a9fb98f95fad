/*
 * nbody.c - direct-sum gravitational N-body simulation (softened, G = 1)
 * with the leapfrog (kick-drift-kick) integrator; bodies are an array of
 * structs of doubles.
 *
 * Verification from physics: forces are applied pairwise with opposite
 * signs, so total momentum must stay zero (to rounding); leapfrog keeps the
 * total energy within a small bound (relative drift below 1e-6 here), and
 * the bodies must actually have moved (kinetic energy grew from zero).
 */
#include <math.h>
#include <stdio.h>

#include "corpus.h"

#define NBODIES BY_CLASS(192, 1024, 4096)
#define STEPS BY_CLASS(20, 40, 40)
#define DT 0.0005
#define EPS2 (0.05 * 0.05)

struct body {
    double x, y, z;
    double vx, vy, vz;
    double ax, ay, az;
    double mass;
};

static struct body bodies[NBODIES];

static void accelerations(void)
{
    int i, j;

    for (i = 0; i < NBODIES; i++)
        bodies[i].ax = bodies[i].ay = bodies[i].az = 0.0;
    for (i = 0; i < NBODIES; i++)
        for (j = i + 1; j < NBODIES; j++) {
            struct body *a = &bodies[i], *b = &bodies[j];
            double dx = b->x - a->x, dy = b->y - a->y, dz = b->z - a->z;
            double r2 = dx * dx + dy * dy + dz * dz + EPS2;
            double inv = 1.0 / (r2 * sqrt(r2));
            a->ax += dx * inv * b->mass;
            a->ay += dy * inv * b->mass;
            a->az += dz * inv * b->mass;
            b->ax -= dx * inv * a->mass;
            b->ay -= dy * inv * a->mass;
            b->az -= dz * inv * a->mass;
        }
}

static void kick(double h)
{
    int i;
    for (i = 0; i < NBODIES; i++) {
        bodies[i].vx += h * bodies[i].ax;
        bodies[i].vy += h * bodies[i].ay;
        bodies[i].vz += h * bodies[i].az;
    }
}

static void drift(double h)
{
    int i;
    for (i = 0; i < NBODIES; i++) {
        bodies[i].x += h * bodies[i].vx;
        bodies[i].y += h * bodies[i].vy;
        bodies[i].z += h * bodies[i].vz;
    }
}

static double kinetic(void)
{
    double e = 0.0;
    int i;
    for (i = 0; i < NBODIES; i++)
        e += 0.5 * bodies[i].mass * (bodies[i].vx * bodies[i].vx + bodies[i].vy * bodies[i].vy
                                     + bodies[i].vz * bodies[i].vz);
    return e;
}

static double potential(void)
{
    double e = 0.0;
    int i, j;
    for (i = 0; i < NBODIES; i++)
        for (j = i + 1; j < NBODIES; j++) {
            double dx = bodies[j].x - bodies[i].x, dy = bodies[j].y - bodies[i].y;
            double dz = bodies[j].z - bodies[i].z;
            e -= bodies[i].mass * bodies[j].mass / sqrt(dx * dx + dy * dy + dz * dz + EPS2);
        }
    return e;
}

int main(void)
{
    unsigned long long seed = 161803398ULL;
    double e0, e1, drift_rel, px = 0.0, py = 0.0, pz = 0.0, pmax = 0.0, ke;
    int i, s;

    printf(" N-body: %d bodies, %d leapfrog steps\n", NBODIES, STEPS);
    for (i = 0; i < NBODIES; i++) {
        bodies[i].x = corpus_uniform(&seed) - 0.5;
        bodies[i].y = corpus_uniform(&seed) - 0.5;
        bodies[i].z = corpus_uniform(&seed) - 0.5;
        bodies[i].vx = bodies[i].vy = bodies[i].vz = 0.0;
        bodies[i].mass = 1.0 / NBODIES;
    }
    e0 = kinetic() + potential();
    accelerations();
    for (s = 0; s < STEPS; s++) {
        hexo_check_migrate();
        kick(0.5 * DT);
        drift(DT);
        accelerations();
        kick(0.5 * DT);
    }
    ke = kinetic();
    e1 = ke + potential();
    drift_rel = fabs((e1 - e0) / e0);
    for (i = 0; i < NBODIES; i++) {
        px += bodies[i].mass * bodies[i].vx;
        py += bodies[i].mass * bodies[i].vy;
        pz += bodies[i].mass * bodies[i].vz;
        pmax += bodies[i].mass * fabs(bodies[i].vx);
    }
    printf(" energy %.12e -> %.12e (relative drift %.3e), kinetic %.12e\n", e0, e1, drift_rel, ke);
    printf(" momentum %.3e %.3e %.3e (scale %.3e)\n", px, py, pz, pmax);
    return corpus_verdict("NBODY", drift_rel < 1e-6 && ke > 0.0 && fabs(px) < 1e-12 * pmax
                                   && fabs(py) < 1e-12 * pmax && fabs(pz) < 1e-12 * pmax);
}
