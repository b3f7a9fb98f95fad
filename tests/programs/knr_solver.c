/* The K&R-style half of knr_main.c: definitions with identifier lists. */
void hexo_check_migrate();

static double omega;

void set_constants(n, w)
int n;
double w;
{
    extern double grid[32][32];
    omega = w * 4.0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            grid[i][j] = (i == 0 || j == 0 || i == n - 1 || j == n - 1) ? 1.0 : 0.0;
}

double relax(g, n, it)
double (*g)[32];
int n, it;
{
    double change = 0.0;
    for (int i = 1; i < n - 1; i++) {
        for (int j = 1; j < n - 1; j++) {
            double v = 0.25 * (g[i - 1][j] + g[i + 1][j] + g[i][j - 1] + g[i][j + 1]);
            double d = v - g[i][j];
            g[i][j] += omega * 0.25 * d;
            change += d * d;
        }
        if ((i + it) % 8 == 0)
            hexo_check_migrate();
    }
    return change;
}

long checksum(g, n)
double (*g)[32];
int n;
{
    long s = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            s = s * 31 + (long)(g[i][j] * 1e6);
    return s;
}
