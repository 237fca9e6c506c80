// obfuscate: pixelate or gaussian-blur many face regions of one frame, all faces in
// each launch, with the CPU anonymiser's region and feathered mask (stream/anonymise.py).
//
//   pixelate: pixelate_cells (INTER_AREA cell means), then obscure_blend (mode 0)
//   blur:     blur_rows (horizontal gaussian into float scratch), then obscure_blend
//             (mode 1: vertical gaussian + blend)
//
// Each face's hidden pixels come from the input frame only (the first pass reads the
// frame, the blend pass reads the scratch), so the blend may write in place. Faces are
// blended in order: v = rint(v * (1 - a) + hidden * a). A pixel whose every mask is zero
// keeps its input value bit for bit.
//
// Layouts: frame H x W x 3 uint8 BGR (row length W * 3).
// regions N x 7 int: left, top, right, bottom (the clipped ROI, right/bottom exclusive),
//   scratch offset (elements), then cells across, cells down (pixelate) or radius,
//   taps offset (blur).
// ellipses N x 4 float: centre x, centre y, half width, half height of the grown face.
// cells: per face cells_h x cells_w x 3 uint8. rows: per face roi_h x roi_w x 3 float.
// taps: per face 2 * radius + 1 normalised gaussian weights.

// The mask of Anonymiser._mask at pixel (x, y): 1 inside the grown face, falling to 0
// across the feather band; an ellipse or (box != 0) a box. Unfused products keep the
// float32 rounding NumPy has, so a hard edge (feather 0) falls on the same pixels.
__device__ __forceinline__ float region_alpha(int x, int y, const float* e, int box, float feather)
{
    float dx = ((float)x + 0.5f - e[0]) / e[2];
    float dy = ((float)y + 0.5f - e[1]) / e[3];
    float radius = box ? fmaxf(fabsf(dx), fabsf(dy)) : sqrtf(__fmul_rn(dx, dx) + __fmul_rn(dy, dy));
    if (feather == 0.f) return radius <= 1.f ? 1.f : 0.f;
    return fminf(fmaxf((1.f + feather - radius) / feather, 0.f), 1.f);
}

// cv2.resize INTER_AREA's weight of source index i in the destination cell [f1, f2)
// (computeResizeAreaTab): whole pixels 1 / cell, partial ends their overlap / cell,
// slivers under 1e-3 dropped.
__device__ __forceinline__ float area_weight(int i, int s1, int s2, double f1, double f2, double cell)
{
    if (i == s1 - 1) return s1 - f1 > 1e-3 ? (float)((s1 - f1) / cell) : 0.f;
    if (i < s2) return (float)(1.0 / cell);
    return f2 - s2 > 1e-3 ? (float)(fmin(fmin(f2 - s2, 1.0), cell) / cell) : 0.f;
}

// The source span of destination cell d when `size` pixels shrink to `cells`.
__device__ __forceinline__ void area_span(int d, int size, int cells, double* f1, double* f2, double* cell, int* s1, int* s2)
{
    double scale = (double)size / cells;
    *f1 = d * scale;
    *f2 = *f1 + scale;
    *cell = fmin(scale, size - *f1);
    *s2 = min((int)floor(*f2), size - 1);
    *s1 = min((int)ceil(*f1), *s2);
}

// One thread per cell: the face region shrunk to cells_w x cells_h as cv2 INTER_AREA
// does (area-weighted mean, rounded to nearest). grid.z walks the faces.
extern "C" __global__ void pixelate_cells(
    const unsigned char* frame, int width, const int* regions, unsigned char* cells, int count)
{
    int cx = blockIdx.x * blockDim.x + threadIdx.x;
    int cy = blockIdx.y * blockDim.y + threadIdx.y;
    int i = blockIdx.z;
    if (i >= count) return;
    const int* r = regions + (size_t)i * 7;
    int roi_w = r[2] - r[0], roi_h = r[3] - r[1], cells_w = r[5], cells_h = r[6];
    if (cx >= cells_w || cy >= cells_h) return;

    double fx1, fx2, cell_x, fy1, fy2, cell_y;
    int sx1, sx2, sy1, sy2;
    area_span(cx, roi_w, cells_w, &fx1, &fx2, &cell_x, &sx1, &sx2);
    area_span(cy, roi_h, cells_h, &fy1, &fy2, &cell_y, &sy1, &sy2);
    float sum[3] = {0.f, 0.f, 0.f};
    for (int sy = max(sy1 - 1, 0); sy <= sy2; ++sy) {
        float wy = area_weight(sy, sy1, sy2, fy1, fy2, cell_y);
        if (wy == 0.f) continue;
        float row[3] = {0.f, 0.f, 0.f};
        const unsigned char* line = frame + ((size_t)(r[1] + sy) * width + r[0]) * 3;
        for (int sx = max(sx1 - 1, 0); sx <= sx2; ++sx) {
            float wx = area_weight(sx, sx1, sx2, fx1, fx2, cell_x);
            for (int c = 0; c < 3; ++c) row[c] += wx * (float)line[sx * 3 + c];
        }
        for (int c = 0; c < 3; ++c) sum[c] += wy * row[c];
    }
    // OpenCV's 2 x 2 fast path rounds a half up, (a + b + c + d + 2) >> 2; the sums are exact here.
    bool halves = roi_w == 2 * cells_w && roi_h == 2 * cells_h;
    unsigned char* out = cells + r[4] + ((size_t)cy * cells_w + cx) * 3;
    for (int c = 0; c < 3; ++c) {
        int value = halves ? (int)floorf(sum[c] + 0.5f) : __float2int_rn(sum[c]);
        out[c] = (unsigned char)min(max(value, 0), 255);
    }
}

// One thread per ROI pixel: the horizontal gaussian pass over the input frame, edge
// pixels of the ROI repeated (the CPU blur also sees the ROI only). grid.z walks the faces.
extern "C" __global__ void blur_rows(
    const unsigned char* frame, int width, const int* regions, const float* taps, float* rows, int count)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int i = blockIdx.z;
    if (i >= count) return;
    const int* r = regions + (size_t)i * 7;
    int roi_w = r[2] - r[0], roi_h = r[3] - r[1], radius = r[5];
    if (x >= roi_w || y >= roi_h) return;

    const float* w = taps + r[6] + radius;
    const unsigned char* line = frame + ((size_t)(r[1] + y) * width + r[0]) * 3;
    float sum[3] = {0.f, 0.f, 0.f};
    for (int k = -radius; k <= radius; ++k) {
        const unsigned char* p = line + min(max(x + k, 0), roi_w - 1) * 3;
        for (int c = 0; c < 3; ++c) sum[c] += w[k] * (float)p[c];
    }
    float* out = rows + r[4] + ((size_t)y * roi_w + x) * 3;
    for (int c = 0; c < 3; ++c) out[c] = sum[c];
}

// One thread per pixel of the span [x0, x0 + span_w) x [y0, y0 + span_h): every face
// whose mask covers the pixel, in order, blends its hidden value in. mode 0 reads the
// pixelate cells (cv2 INTER_NEAREST's index), mode 1 runs the vertical gaussian over rows.
// src and dst may be the same frame; with different frames the span must be the whole frame.
extern "C" __global__ void obscure_blend(
    const unsigned char* src, unsigned char* dst, int width, int x0, int y0, int span_w, int span_h,
    const int* regions, const float* ellipses, int count, int box, float feather,
    int mode, const unsigned char* cells, const float* rows, const float* taps)
{
    int x = x0 + (int)(blockIdx.x * blockDim.x + threadIdx.x);
    int y = y0 + (int)(blockIdx.y * blockDim.y + threadIdx.y);
    if (x >= x0 + span_w || y >= y0 + span_h) return;

    size_t pixel = ((size_t)y * width + x) * 3;
    float v[3] = {(float)src[pixel], (float)src[pixel + 1], (float)src[pixel + 2]};
    for (int i = 0; i < count; ++i) {
        const int* r = regions + (size_t)i * 7;
        if (x < r[0] || x >= r[2] || y < r[1] || y >= r[3]) continue;
        float a = region_alpha(x, y, ellipses + (size_t)i * 4, box, feather);
        if (a <= 0.f) continue;
        int lx = x - r[0], ly = y - r[1], roi_w = r[2] - r[0], roi_h = r[3] - r[1];
        float hidden[3];
        if (mode == 0) {
            int cells_w = r[5], cells_h = r[6];
            int sx = min((int)floor(lx * (1.0 / ((double)roi_w / cells_w))), cells_w - 1);
            int sy = min((int)floor(ly * (1.0 / ((double)roi_h / cells_h))), cells_h - 1);
            const unsigned char* p = cells + r[4] + ((size_t)sy * cells_w + sx) * 3;
            for (int c = 0; c < 3; ++c) hidden[c] = (float)p[c];
        } else {
            int radius = r[5];
            const float* w = taps + r[6] + radius;
            const float* column = rows + r[4] + (size_t)lx * 3;
            hidden[0] = hidden[1] = hidden[2] = 0.f;
            for (int k = -radius; k <= radius; ++k) {
                const float* p = column + (size_t)min(max(ly + k, 0), roi_h - 1) * roi_w * 3;
                for (int c = 0; c < 3; ++c) hidden[c] += w[k] * p[c];
            }
        }
        for (int c = 0; c < 3; ++c) v[c] = rintf(fminf(fmaxf(v[c] * (1.f - a) + hidden[c] * a, 0.f), 255.f));
    }
    for (int c = 0; c < 3; ++c) dst[pixel + c] = (unsigned char)v[c];
}
