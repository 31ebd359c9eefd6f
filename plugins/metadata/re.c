/* SPDX-License-Identifier: Apache-2.0 */
/* Linear-time regular expressions for list filters: Go regexp (RE2) syntax
 * parsed into a small tree, compiled to a Thompson NFA, run as a Pike VM
 * (two thread lists, no backtracking, no captures). containerd compiles
 * `~=` values with Go's regexp.Compile, so the syntax, flags and error
 * wording follow Go's regexp/syntax with its Perl flags: `^`/`$` anchor the
 * whole text unless (?m), `.` excludes '\n' unless (?s), `[^a]` includes
 * '\n', \d \s \w \b and [[:alpha:]] are ASCII. Input is UTF-8: `.` and
 * classes consume code points, an invalid byte reads as U+FFFD; (?i) uses
 * Unicode simple case folding, as Go does. Not supported: \p{..}
 * Unicode classes (refused), and what Go refuses too (backreferences,
 * lookaround, possessive or stacked repetitions). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "re.h"

/* ---- tree ------------------------------------------------------------- */

enum {
    N_EMPTY,
    N_LIT,
    N_CLASS,
    N_ANY,   /* any code point, (?s). */
    N_ANYNL, /* any but '\n' */
    N_ASSERT,
    N_CAT,
    N_ALT,
    N_STAR,
    N_PLUS,
    N_QUEST,
    N_REPEAT,
};

/* Empty-width assertions, as bits of a position's context. */
enum {
    A_BEGIN_TEXT = 1,
    A_END_TEXT = 2,
    A_BEGIN_LINE = 4,
    A_END_LINE = 8,
    A_WORD_B = 16,
    A_NOT_WORD_B = 32,
};

/* Parser flags (Go's FoldCase, !OneLine, DotNL, NonGreedy). */
enum { F_FOLD = 1, F_MULTILINE = 2, F_DOTNL = 4, F_UNGREEDY = 8 };

#define MAX_RUNE 0x10FFFFu
#define BAD_RUNE 0xFFFDu

typedef struct {
    uint32_t lo, hi;
} range_t;

typedef struct {
    range_t *r;
    size_t n, cap;
} rvec_t;

typedef struct node_s node_t;
struct node_s {
    int kind;
    uint32_t rune;    /* N_LIT */
    unsigned assert;  /* N_ASSERT */
    int min, max;     /* N_REPEAT; max -1: unbounded */
    rvec_t cls;       /* N_CLASS: sorted, merged */
    uint32_t cls_idx; /* N_CLASS: 1 + its index in the program, once emitted */
    node_t **sub;     /* N_CAT, N_ALT; repetitions: sub[0] */
    size_t n_sub, cap_sub;
};

/* ---- program ---------------------------------------------------------- */

enum { I_RUNE, I_CLASS, I_ANY, I_ANYNL, I_ASSERT, I_SPLIT, I_JMP, I_MATCH };

typedef struct {
    uint8_t op;
    uint32_t x, y; /* rune / class index / assert bits / targets */
} inst_t;

typedef struct {
    uint64_t ascii[2]; /* code points below 128 */
    uint32_t off, n;   /* ranges at or above 128 in the pool */
} cls_t;

struct meta_re_s {
    inst_t *prog;
    size_t n;
    cls_t *cls;
    size_t n_cls;
    range_t *pool;
    size_t n_pool;
    bool anchored; /* every path starts with \A: only try position 0 */
    /* Scratch for meta_re_match, sized here. */
    uint32_t *mark, gen;
    uint32_t *list[2], *stack;
};

/* ---- UTF-8 ------------------------------------------------------------ */

/* Decodes one code point like Go's utf8.DecodeRune: an invalid or
 * truncated sequence, an overlong form or a surrogate is U+FFFD, width 1. */
static uint32_t utf8_decode(const unsigned char *s, size_t n, size_t *w)
{
    unsigned c = s[0];
    *w = 1;
    if (c < 0x80)
        return c;
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    uint32_t r;
    if (c < 0xC2)
        return BAD_RUNE;
    if (c < 0xE0) {
        need = 1;
        r = c & 0x1F;
    } else if (c < 0xF0) {
        need = 2;
        r = c & 0x0F;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c < 0xF5) {
        need = 3;
        r = c & 0x07;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return BAD_RUNE;
    }
    if (n < need + 1 || s[1] < lo || s[1] > hi)
        return BAD_RUNE;
    for (size_t i = 1; i <= need; i++) {
        if (s[i] < 0x80 || s[i] > 0xBF)
            return BAD_RUNE;
        r = r << 6 | (s[i] & 0x3F);
    }
    *w = need + 1;
    return r;
}

/* ---- case folding ----------------------------------------------------- */

/* Unicode simple case folding as Go's unicode.SimpleFold walks it (an orbit
 * of 2 to 4 code points, each step to the next one), in runs: for r in
 * [lo, hi] the next is r + delta, or (delta 0) alternately r + 1, r - 1
 * starting at lo. Generated from Go 1.19 (Unicode 13.0.0) by:
 *
 *   for r := rune(0); r <= unicode.MaxRune; r++ {
 *       if n := unicode.SimpleFold(r); n != r { record(r, n - r) }
 *   }   // then merge equal deltas, and +1/-1 alternations, into runs
 */
static const struct {
    uint32_t lo, hi;
    int32_t delta;
} fold_runs[] = {
    {0x41, 0x5A, 32},         {0x61, 0x6A, -32},        {0x6B, 0x6B, 8383},
    {0x6C, 0x72, -32},        {0x73, 0x73, 268},        {0x74, 0x7A, -32},
    {0xB5, 0xB5, 743},        {0xC0, 0xD6, 32},         {0xD8, 0xDE, 32},
    {0xDF, 0xDF, 7615},       {0xE0, 0xE4, -32},        {0xE5, 0xE5, 8262},
    {0xE6, 0xF6, -32},        {0xF8, 0xFE, -32},        {0xFF, 0xFF, 121},
    {0x100, 0x12F, 0},        {0x132, 0x137, 0},        {0x139, 0x148, 0},
    {0x14A, 0x177, 0},        {0x178, 0x178, -121},     {0x179, 0x17E, 0},
    {0x17F, 0x17F, -300},     {0x180, 0x180, 195},      {0x181, 0x181, 210},
    {0x182, 0x185, 0},        {0x186, 0x186, 206},      {0x187, 0x188, 0},
    {0x189, 0x18A, 205},      {0x18B, 0x18C, 0},        {0x18E, 0x18E, 79},
    {0x18F, 0x18F, 202},      {0x190, 0x190, 203},      {0x191, 0x192, 0},
    {0x193, 0x193, 205},      {0x194, 0x194, 207},      {0x195, 0x195, 97},
    {0x196, 0x196, 211},      {0x197, 0x197, 209},      {0x198, 0x199, 0},
    {0x19A, 0x19A, 163},      {0x19C, 0x19C, 211},      {0x19D, 0x19D, 213},
    {0x19E, 0x19E, 130},      {0x19F, 0x19F, 214},      {0x1A0, 0x1A5, 0},
    {0x1A6, 0x1A6, 218},      {0x1A7, 0x1A8, 0},        {0x1A9, 0x1A9, 218},
    {0x1AC, 0x1AD, 0},        {0x1AE, 0x1AE, 218},      {0x1AF, 0x1B0, 0},
    {0x1B1, 0x1B2, 217},      {0x1B3, 0x1B6, 0},        {0x1B7, 0x1B7, 219},
    {0x1B8, 0x1B9, 0},        {0x1BC, 0x1BD, 0},        {0x1BF, 0x1BF, 56},
    {0x1C4, 0x1C4, 1},        {0x1C5, 0x1C5, 1},        {0x1C6, 0x1C6, -2},
    {0x1C7, 0x1C7, 1},        {0x1C8, 0x1C8, 1},        {0x1C9, 0x1C9, -2},
    {0x1CA, 0x1CA, 1},        {0x1CB, 0x1CB, 1},        {0x1CC, 0x1CC, -2},
    {0x1CD, 0x1DC, 0},        {0x1DD, 0x1DD, -79},      {0x1DE, 0x1EF, 0},
    {0x1F1, 0x1F1, 1},        {0x1F2, 0x1F2, 1},        {0x1F3, 0x1F3, -2},
    {0x1F4, 0x1F5, 0},        {0x1F6, 0x1F6, -97},      {0x1F7, 0x1F7, -56},
    {0x1F8, 0x21F, 0},        {0x220, 0x220, -130},     {0x222, 0x233, 0},
    {0x23A, 0x23A, 10795},    {0x23B, 0x23C, 0},        {0x23D, 0x23D, -163},
    {0x23E, 0x23E, 10792},    {0x23F, 0x240, 10815},    {0x241, 0x242, 0},
    {0x243, 0x243, -195},     {0x244, 0x244, 69},       {0x245, 0x245, 71},
    {0x246, 0x24F, 0},        {0x250, 0x250, 10783},    {0x251, 0x251, 10780},
    {0x252, 0x252, 10782},    {0x253, 0x253, -210},     {0x254, 0x254, -206},
    {0x256, 0x257, -205},     {0x259, 0x259, -202},     {0x25B, 0x25B, -203},
    {0x25C, 0x25C, 42319},    {0x260, 0x260, -205},     {0x261, 0x261, 42315},
    {0x263, 0x263, -207},     {0x265, 0x265, 42280},    {0x266, 0x266, 42308},
    {0x268, 0x268, -209},     {0x269, 0x269, -211},     {0x26A, 0x26A, 42308},
    {0x26B, 0x26B, 10743},    {0x26C, 0x26C, 42305},    {0x26F, 0x26F, -211},
    {0x271, 0x271, 10749},    {0x272, 0x272, -213},     {0x275, 0x275, -214},
    {0x27D, 0x27D, 10727},    {0x280, 0x280, -218},     {0x282, 0x282, 42307},
    {0x283, 0x283, -218},     {0x287, 0x287, 42282},    {0x288, 0x288, -218},
    {0x289, 0x289, -69},      {0x28A, 0x28B, -217},     {0x28C, 0x28C, -71},
    {0x292, 0x292, -219},     {0x29D, 0x29D, 42261},    {0x29E, 0x29E, 42258},
    {0x345, 0x345, 84},       {0x370, 0x373, 0},        {0x376, 0x377, 0},
    {0x37B, 0x37D, 130},      {0x37F, 0x37F, 116},      {0x386, 0x386, 38},
    {0x388, 0x38A, 37},       {0x38C, 0x38C, 64},       {0x38E, 0x38F, 63},
    {0x391, 0x3A1, 32},       {0x3A3, 0x3A3, 31},       {0x3A4, 0x3AB, 32},
    {0x3AC, 0x3AC, -38},      {0x3AD, 0x3AF, -37},      {0x3B1, 0x3B1, -32},
    {0x3B2, 0x3B2, 30},       {0x3B3, 0x3B4, -32},      {0x3B5, 0x3B5, 64},
    {0x3B6, 0x3B7, -32},      {0x3B8, 0x3B8, 25},       {0x3B9, 0x3B9, 7173},
    {0x3BA, 0x3BA, 54},       {0x3BB, 0x3BB, -32},      {0x3BC, 0x3BC, -775},
    {0x3BD, 0x3BF, -32},      {0x3C0, 0x3C0, 22},       {0x3C1, 0x3C1, 48},
    {0x3C2, 0x3C2, 1},        {0x3C3, 0x3C5, -32},      {0x3C6, 0x3C6, 15},
    {0x3C7, 0x3C8, -32},      {0x3C9, 0x3C9, 7517},     {0x3CA, 0x3CB, -32},
    {0x3CC, 0x3CC, -64},      {0x3CD, 0x3CE, -63},      {0x3CF, 0x3CF, 8},
    {0x3D0, 0x3D0, -62},      {0x3D1, 0x3D1, 35},       {0x3D5, 0x3D5, -47},
    {0x3D6, 0x3D6, -54},      {0x3D7, 0x3D7, -8},       {0x3D8, 0x3EF, 0},
    {0x3F0, 0x3F0, -86},      {0x3F1, 0x3F1, -80},      {0x3F2, 0x3F2, 7},
    {0x3F3, 0x3F3, -116},     {0x3F4, 0x3F4, -92},      {0x3F5, 0x3F5, -96},
    {0x3F7, 0x3F8, 0},        {0x3F9, 0x3F9, -7},       {0x3FA, 0x3FB, 0},
    {0x3FD, 0x3FF, -130},     {0x400, 0x40F, 80},       {0x410, 0x42F, 32},
    {0x430, 0x431, -32},      {0x432, 0x432, 6222},     {0x433, 0x433, -32},
    {0x434, 0x434, 6221},     {0x435, 0x43D, -32},      {0x43E, 0x43E, 6212},
    {0x43F, 0x440, -32},      {0x441, 0x442, 6210},     {0x443, 0x449, -32},
    {0x44A, 0x44A, 6204},     {0x44B, 0x44F, -32},      {0x450, 0x45F, -80},
    {0x460, 0x462, 0},        {0x463, 0x463, 6180},     {0x464, 0x481, 0},
    {0x48A, 0x4BF, 0},        {0x4C0, 0x4C0, 15},       {0x4C1, 0x4CE, 0},
    {0x4CF, 0x4CF, -15},      {0x4D0, 0x52F, 0},        {0x531, 0x556, 48},
    {0x561, 0x586, -48},      {0x10A0, 0x10C5, 7264},   {0x10C7, 0x10C7, 7264},
    {0x10CD, 0x10CD, 7264},   {0x10D0, 0x10FA, 3008},   {0x10FD, 0x10FF, 3008},
    {0x13A0, 0x13EF, 38864},  {0x13F0, 0x13F5, 8},      {0x13F8, 0x13FD, -8},
    {0x1C80, 0x1C80, -6254},  {0x1C81, 0x1C81, -6253},  {0x1C82, 0x1C82, -6244},
    {0x1C83, 0x1C83, -6242},  {0x1C84, 0x1C84, 1},      {0x1C85, 0x1C85, -6243},
    {0x1C86, 0x1C86, -6236},  {0x1C87, 0x1C87, -6181},  {0x1C88, 0x1C88, 35266},
    {0x1C90, 0x1CBA, -3008},  {0x1CBD, 0x1CBF, -3008},  {0x1D79, 0x1D79, 35332},
    {0x1D7D, 0x1D7D, 3814},   {0x1D8E, 0x1D8E, 35384},  {0x1E00, 0x1E60, 0},
    {0x1E61, 0x1E61, 58},     {0x1E62, 0x1E95, 0},      {0x1E9B, 0x1E9B, -59},
    {0x1E9E, 0x1E9E, -7615},  {0x1EA0, 0x1EFF, 0},      {0x1F00, 0x1F07, 8},
    {0x1F08, 0x1F0F, -8},     {0x1F10, 0x1F15, 8},      {0x1F18, 0x1F1D, -8},
    {0x1F20, 0x1F27, 8},      {0x1F28, 0x1F2F, -8},     {0x1F30, 0x1F37, 8},
    {0x1F38, 0x1F3F, -8},     {0x1F40, 0x1F45, 8},      {0x1F48, 0x1F4D, -8},
    {0x1F51, 0x1F51, 8},      {0x1F53, 0x1F53, 8},      {0x1F55, 0x1F55, 8},
    {0x1F57, 0x1F57, 8},      {0x1F59, 0x1F59, -8},     {0x1F5B, 0x1F5B, -8},
    {0x1F5D, 0x1F5D, -8},     {0x1F5F, 0x1F5F, -8},     {0x1F60, 0x1F67, 8},
    {0x1F68, 0x1F6F, -8},     {0x1F70, 0x1F71, 74},     {0x1F72, 0x1F75, 86},
    {0x1F76, 0x1F77, 100},    {0x1F78, 0x1F79, 128},    {0x1F7A, 0x1F7B, 112},
    {0x1F7C, 0x1F7D, 126},    {0x1F80, 0x1F87, 8},      {0x1F88, 0x1F8F, -8},
    {0x1F90, 0x1F97, 8},      {0x1F98, 0x1F9F, -8},     {0x1FA0, 0x1FA7, 8},
    {0x1FA8, 0x1FAF, -8},     {0x1FB0, 0x1FB1, 8},      {0x1FB3, 0x1FB3, 9},
    {0x1FB8, 0x1FB9, -8},     {0x1FBA, 0x1FBB, -74},    {0x1FBC, 0x1FBC, -9},
    {0x1FBE, 0x1FBE, -7289},  {0x1FC3, 0x1FC3, 9},      {0x1FC8, 0x1FCB, -86},
    {0x1FCC, 0x1FCC, -9},     {0x1FD0, 0x1FD1, 8},      {0x1FD8, 0x1FD9, -8},
    {0x1FDA, 0x1FDB, -100},   {0x1FE0, 0x1FE1, 8},      {0x1FE5, 0x1FE5, 7},
    {0x1FE8, 0x1FE9, -8},     {0x1FEA, 0x1FEB, -112},   {0x1FEC, 0x1FEC, -7},
    {0x1FF3, 0x1FF3, 9},      {0x1FF8, 0x1FF9, -128},   {0x1FFA, 0x1FFB, -126},
    {0x1FFC, 0x1FFC, -9},     {0x2126, 0x2126, -7549},  {0x212A, 0x212A, -8415},
    {0x212B, 0x212B, -8294},  {0x2132, 0x2132, 28},     {0x214E, 0x214E, -28},
    {0x2160, 0x216F, 16},     {0x2170, 0x217F, -16},    {0x2183, 0x2184, 0},
    {0x24B6, 0x24CF, 26},     {0x24D0, 0x24E9, -26},    {0x2C00, 0x2C2E, 48},
    {0x2C30, 0x2C5E, -48},    {0x2C60, 0x2C61, 0},      {0x2C62, 0x2C62, -10743},
    {0x2C63, 0x2C63, -3814},  {0x2C64, 0x2C64, -10727}, {0x2C65, 0x2C65, -10795},
    {0x2C66, 0x2C66, -10792}, {0x2C67, 0x2C6C, 0},      {0x2C6D, 0x2C6D, -10780},
    {0x2C6E, 0x2C6E, -10749}, {0x2C6F, 0x2C6F, -10783}, {0x2C70, 0x2C70, -10782},
    {0x2C72, 0x2C73, 0},      {0x2C75, 0x2C76, 0},      {0x2C7E, 0x2C7F, -10815},
    {0x2C80, 0x2CE3, 0},      {0x2CEB, 0x2CEE, 0},      {0x2CF2, 0x2CF3, 0},
    {0x2D00, 0x2D25, -7264},  {0x2D27, 0x2D27, -7264},  {0x2D2D, 0x2D2D, -7264},
    {0xA640, 0xA64A, 0},      {0xA64B, 0xA64B, -35267}, {0xA64C, 0xA66D, 0},
    {0xA680, 0xA69B, 0},      {0xA722, 0xA72F, 0},      {0xA732, 0xA76F, 0},
    {0xA779, 0xA77C, 0},      {0xA77D, 0xA77D, -35332}, {0xA77E, 0xA787, 0},
    {0xA78B, 0xA78C, 0},      {0xA78D, 0xA78D, -42280}, {0xA790, 0xA793, 0},
    {0xA794, 0xA794, 48},     {0xA796, 0xA7A9, 0},      {0xA7AA, 0xA7AA, -42308},
    {0xA7AB, 0xA7AB, -42319}, {0xA7AC, 0xA7AC, -42315}, {0xA7AD, 0xA7AD, -42305},
    {0xA7AE, 0xA7AE, -42308}, {0xA7B0, 0xA7B0, -42258}, {0xA7B1, 0xA7B1, -42282},
    {0xA7B2, 0xA7B2, -42261}, {0xA7B3, 0xA7B3, 928},    {0xA7B4, 0xA7BF, 0},
    {0xA7C2, 0xA7C3, 0},      {0xA7C4, 0xA7C4, -48},    {0xA7C5, 0xA7C5, -42307},
    {0xA7C6, 0xA7C6, -35384}, {0xA7C7, 0xA7CA, 0},      {0xA7F5, 0xA7F6, 0},
    {0xAB53, 0xAB53, -928},   {0xAB70, 0xABBF, -38864}, {0xFF21, 0xFF3A, 32},
    {0xFF41, 0xFF5A, -32},    {0x10400, 0x10427, 40},   {0x10428, 0x1044F, -40},
    {0x104B0, 0x104D3, 40},   {0x104D8, 0x104FB, -40},  {0x10C80, 0x10CB2, 64},
    {0x10CC0, 0x10CF2, -64},  {0x118A0, 0x118BF, 32},   {0x118C0, 0x118DF, -32},
    {0x16E40, 0x16E5F, 32},   {0x16E60, 0x16E7F, -32},  {0x1E900, 0x1E921, 34},
    {0x1E922, 0x1E943, -34},
};

#define FOLD_MIN 0x41u
#define FOLD_MAX 0x1E943u

/* Index of the run holding r, or -1. */
static ssize_t fold_find(uint32_t r)
{
    size_t lo = 0, hi = sizeof(fold_runs) / sizeof(fold_runs[0]);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r < fold_runs[mid].lo)
            hi = mid;
        else if (r > fold_runs[mid].hi)
            lo = mid + 1;
        else
            return (ssize_t)mid;
    }
    return -1;
}

static uint32_t fold_next(uint32_t r)
{
    ssize_t i = fold_find(r);
    if (i < 0)
        return r;
    if (fold_runs[i].delta)
        return (uint32_t)((int32_t)r + fold_runs[i].delta);
    return (r - fold_runs[i].lo) % 2 == 0 ? r + 1 : r - 1;
}

/* Writes r's case orbit (r first) to out; returns its size (1..4). */
static size_t fold_orbit(uint32_t r, uint32_t out[4])
{
    size_t k = 0;
    out[k++] = r;
    for (uint32_t f = fold_next(r); f != r && k < 4; f = fold_next(f))
        out[k++] = f;
    return k;
}

/* ---- range vectors ---------------------------------------------------- */

static int rvec_add(rvec_t *v, uint32_t lo, uint32_t hi)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        range_t *r = realloc(v->r, cap * sizeof(*r));
        if (!r)
            return -1;
        v->r = r;
        v->cap = cap;
    }
    v->r[v->n++] = (range_t){lo, hi};
    return 0;
}

static int range_cmp(const void *a, const void *b)
{
    const range_t *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo ? 1 : x->hi < y->hi ? -1 : x->hi > y->hi;
}

/* Sorts and merges overlapping or adjacent ranges. */
static void rvec_clean(rvec_t *v)
{
    if (v->n < 2)
        return;
    qsort(v->r, v->n, sizeof(range_t), range_cmp);
    size_t o = 0;
    for (size_t i = 1; i < v->n; i++) {
        if (v->r[i].lo <= v->r[o].hi + 1) {
            if (v->r[i].hi > v->r[o].hi)
                v->r[o].hi = v->r[i].hi;
        } else {
            v->r[++o] = v->r[i];
        }
    }
    v->n = o + 1;
}

/* Replaces a clean vector by its complement in [0, MAX_RUNE]. */
static int rvec_negate(rvec_t *v)
{
    rvec_t out = {0};
    uint32_t next = 0;
    for (size_t i = 0; i < v->n; i++) {
        if (v->r[i].lo > next && rvec_add(&out, next, v->r[i].lo - 1) < 0)
            goto fail;
        next = v->r[i].hi + 1;
    }
    if (next <= MAX_RUNE && rvec_add(&out, next, MAX_RUNE) < 0)
        goto fail;
    free(v->r);
    *v = out;
    return 0;
fail:
    free(out.r);
    return -1;
}

/* Adds [lo, hi] and, when folding, every case partner of its letters
 * (brute force over the letters that fold, like Go's appendFoldedRange). */
static int rvec_add_folded(rvec_t *v, uint32_t lo, uint32_t hi, bool fold)
{
    if (rvec_add(v, lo, hi) < 0)
        return -1;
    if (!fold || hi < FOLD_MIN || lo > FOLD_MAX || (lo <= FOLD_MIN && hi >= FOLD_MAX))
        return 0; /* nothing folds, or every partner is inside already */
    ssize_t i = fold_find(lo);
    if (i < 0) { /* first run above lo */
        size_t a = 0, b = sizeof(fold_runs) / sizeof(fold_runs[0]);
        while (a < b) {
            size_t mid = a + (b - a) / 2;
            if (fold_runs[mid].hi < lo)
                a = mid + 1;
            else
                b = mid;
        }
        i = (ssize_t)a;
    }
    for (size_t k = (size_t)i; k < sizeof(fold_runs) / sizeof(fold_runs[0]); k++) {
        if (fold_runs[k].lo > hi)
            break;
        uint32_t a = lo > fold_runs[k].lo ? lo : fold_runs[k].lo;
        uint32_t b = hi < fold_runs[k].hi ? hi : fold_runs[k].hi;
        for (uint32_t r = a; r <= b; r++) {
            uint32_t orb[4];
            size_t n = fold_orbit(r, orb);
            for (size_t j = 1; j < n; j++)
                if ((orb[j] < lo || orb[j] > hi) && rvec_add(v, orb[j], orb[j]) < 0)
                    return -1;
        }
    }
    return 0;
}

/* ---- parser ----------------------------------------------------------- */

typedef struct {
    const char *s;
    size_t len, pos;
    char err[200];
    bool failed;
    node_t **all; /* every node made, freed together */
    size_t n_all, cap_all;
} parser_t;

/* Go's error wording: "<what>: `<the offending part>`" (long parts cut). */
static node_t *fail_at(parser_t *p, const char *what, size_t start, size_t end)
{
    if (p->failed)
        return NULL;
    p->failed = true;
    if (end > p->len)
        end = p->len;
    size_t n = end > start ? end - start : 0;
    const char *more = "";
    if (n > 60) {
        n = 57;
        while (n > 0 && ((unsigned char)p->s[start + n] & 0xC0) == 0x80)
            n--; /* do not cut a UTF-8 sequence */
        more = "...";
    }
    if (n == 0 && !*more)
        snprintf(p->err, sizeof(p->err), "%s", what);
    else
        snprintf(p->err, sizeof(p->err), "%s: `%.*s%s`", what, (int)n, p->s + start, more);
    return NULL;
}

static node_t *fail_msg(parser_t *p, const char *what)
{
    return fail_at(p, what, 0, 0);
}

static node_t *new_node(parser_t *p, int kind)
{
    if (p->n_all == p->cap_all) {
        size_t cap = p->cap_all ? p->cap_all * 2 : 32;
        node_t **a = realloc(p->all, cap * sizeof(*a));
        if (!a)
            return fail_msg(p, "out of memory");
        p->all = a;
        p->cap_all = cap;
    }
    node_t *n = calloc(1, sizeof(*n));
    if (!n)
        return fail_msg(p, "out of memory");
    n->kind = kind;
    p->all[p->n_all++] = n;
    return n;
}

static void free_nodes(parser_t *p)
{
    for (size_t i = 0; i < p->n_all; i++) {
        free(p->all[i]->cls.r);
        free(p->all[i]->sub);
        free(p->all[i]);
    }
    free(p->all);
}

static int add_sub(parser_t *p, node_t *n, node_t *sub)
{
    if (n->n_sub == n->cap_sub) {
        size_t cap = n->cap_sub ? n->cap_sub * 2 : 4;
        node_t **s = realloc(n->sub, cap * sizeof(*s));
        if (!s) {
            fail_msg(p, "out of memory");
            return -1;
        }
        n->sub = s;
        n->cap_sub = cap;
    }
    n->sub[n->n_sub++] = sub;
    return 0;
}

/* Next code point of the pattern; invalid UTF-8 fails like Go. */
static int next_rune(parser_t *p, uint32_t *r)
{
    size_t w;
    *r = utf8_decode((const unsigned char *)p->s + p->pos, p->len - p->pos, &w);
    if (*r == BAD_RUNE && w == 1 && (unsigned char)p->s[p->pos] >= 0x80) {
        fail_at(p, "invalid UTF-8", p->pos, p->len);
        return -1;
    }
    p->pos += w;
    return 0;
}

static int unhex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool is_alnum(uint32_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* An escape sequence standing for one code point, at p->pos ('\\'). */
static int parse_escape(parser_t *p, uint32_t *out)
{
    size_t start = p->pos++;
    if (p->pos >= p->len) {
        fail_msg(p, "trailing backslash at end of expression");
        return -1;
    }
    uint32_t c;
    if (next_rune(p, &c) < 0)
        return -1;
    if (c < 0x80 && !is_alnum(c)) {
        *out = c; /* escaped punctuation is itself */
        return 0;
    }
    switch (c) {
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
        /* A single non-zero digit would be a backreference. */
        if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '7')
            break;
        /* fallthrough */
    case '0': {
        uint32_t r = c - '0';
        for (int i = 1; i < 3 && p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '7'; i++)
            r = r * 8 + (uint32_t)(p->s[p->pos++] - '0');
        *out = r;
        return 0;
    }
    case 'x': {
        /* \xHH or \x{H...}; code points are read (and checked) one at a
         * time so that the error shows what Go shows. */
        uint32_t h;
        if (p->pos >= p->len)
            break;
        if (next_rune(p, &h) < 0)
            return -1;
        if (h == '{') {
            uint32_t r = 0;
            int nhex = 0;
            for (;;) {
                if (p->pos >= p->len)
                    goto bad;
                if (next_rune(p, &h) < 0)
                    return -1;
                if (h == '}')
                    break;
                int v = h < 0x80 ? unhex((char)h) : -1;
                if (v < 0)
                    goto bad;
                r = r * 16 + (uint32_t)v;
                if (r > MAX_RUNE)
                    goto bad;
                nhex++;
            }
            if (nhex == 0)
                break;
            *out = r;
            return 0;
        }
        int x = h < 0x80 ? unhex((char)h) : -1;
        if (p->pos >= p->len)
            break;
        if (next_rune(p, &h) < 0)
            return -1;
        int y = h < 0x80 ? unhex((char)h) : -1;
        if (x < 0 || y < 0)
            break;
        *out = (uint32_t)(x * 16 + y);
        return 0;
    }
    case 'a':
        *out = 7;
        return 0;
    case 'f':
        *out = 12;
        return 0;
    case 'n':
        *out = 10;
        return 0;
    case 'r':
        *out = 13;
        return 0;
    case 't':
        *out = 9;
        return 0;
    case 'v':
        *out = 11;
        return 0;
    default:
        break;
    }
bad:
    fail_at(p, "invalid escape sequence", start, p->pos);
    return -1;
}

/* ASCII groups: Perl's \d \s \w and the POSIX [:name:] classes. */
typedef struct {
    const char *name;
    const char *ranges; /* pairs lo, hi */
} group_t;

static const group_t perl_groups[] = {
    {"d", "09"},
    {"s", "\t\n\f\r  "},
    {"w", "09AZ__az"},
};

static const group_t posix_groups[] = {
    {"alnum", "09AZaz"},   {"alpha", "AZaz"},
    {"ascii", "\x01\x7f"}, /* and NUL, added below */
    {"blank", "\t\t  "},   {"cntrl", "\x01\x1f\x7f\x7f"},
    {"digit", "09"},       {"graph", "!~"},
    {"lower", "az"},       {"print", " ~"},
    {"punct", "!/:@[`{~"}, {"space", "\t\r  "},
    {"upper", "AZ"},       {"word", "09AZ__az"},
    {"xdigit", "09AFaf"},
};

/* Adds a group (negated if neg; folded under (?i), before negating, as Go
 * does) to v. */
static int add_group(parser_t *p, rvec_t *v, const group_t *g, bool neg, unsigned flags)
{
    rvec_t t = {0};
    int rc = -1;
    if ((g->name[0] == 'a' && strcmp(g->name, "ascii") == 0) ||
        (g->name[0] == 'c' && strcmp(g->name, "cntrl") == 0))
        if (rvec_add(&t, 0, 0) < 0)
            goto out;
    for (const char *r = g->ranges; r[0]; r += 2)
        if (rvec_add_folded(&t, (unsigned char)r[0], (unsigned char)r[1], flags & F_FOLD) < 0)
            goto out;
    rvec_clean(&t);
    if (neg && rvec_negate(&t) < 0)
        goto out;
    for (size_t i = 0; i < t.n; i++)
        if (rvec_add(v, t.r[i].lo, t.r[i].hi) < 0)
            goto out;
    rc = 0;
out:
    free(t.r);
    if (rc < 0)
        fail_msg(p, "out of memory");
    return rc;
}

/* \d \D \s \S \w \W at p->pos, if there; returns 1 when added. */
static int maybe_perl_group(parser_t *p, rvec_t *v, unsigned flags)
{
    if (p->pos + 1 >= p->len || p->s[p->pos] != '\\')
        return 0;
    char c = p->s[p->pos + 1];
    for (size_t i = 0; i < sizeof(perl_groups) / sizeof(perl_groups[0]); i++)
        if (c == perl_groups[i].name[0] || c == perl_groups[i].name[0] - 'a' + 'A') {
            if (add_group(p, v, &perl_groups[i], c < 'a', flags) < 0)
                return -1;
            p->pos += 2;
            return 1;
        }
    return 0;
}

static bool at_unicode_class(const parser_t *p)
{
    return p->pos + 1 < p->len && p->s[p->pos] == '\\' &&
           (p->s[p->pos + 1] == 'p' || p->s[p->pos + 1] == 'P');
}

static node_t *unicode_class_unsupported(parser_t *p)
{
    size_t end = p->pos + 2;
    if (end < p->len && p->s[end] == '{') {
        const char *close = memchr(p->s + end, '}', p->len - end);
        end = close ? (size_t)(close - p->s) + 1 : p->len;
    } else if (end < p->len) {
        end++;
    }
    return fail_at(p, "Unicode character classes (\\p, \\P) are not supported", p->pos, end);
}

static node_t *class_node(parser_t *p, rvec_t *v)
{
    node_t *n = new_node(p, N_CLASS);
    if (!n) {
        free(v->r);
        return NULL;
    }
    rvec_clean(v);
    n->cls = *v;
    return n;
}

/* A class char: an escape or a code point; the end of the pattern is a
 * missing ']'. */
static int class_char(parser_t *p, size_t start, uint32_t *r)
{
    if (p->pos >= p->len) {
        fail_at(p, "missing closing ]", start, p->len);
        return -1;
    }
    if (p->s[p->pos] == '\\')
        return parse_escape(p, r);
    return next_rune(p, r);
}

/* A bracket expression at p->pos ('['). */
static node_t *parse_class(parser_t *p, unsigned flags)
{
    size_t start = p->pos++;
    bool neg = false;
    rvec_t v = {0};
    if (p->pos < p->len && p->s[p->pos] == '^') {
        neg = true;
        p->pos++;
    }
    bool first = true; /* ']' is a literal as the first char */
    while (p->pos >= p->len || p->s[p->pos] != ']' || first) {
        first = false;
        if (p->pos + 1 < p->len && p->s[p->pos] == '[' && p->s[p->pos + 1] == ':') {
            /* [:name:] or [:^name:] (an unknown name is an error, as in Go;
             * without a closing ":]" the '[' is a literal). */
            size_t i = p->pos + 2;
            while (i + 1 < p->len && !(p->s[i] == ':' && p->s[i + 1] == ']'))
                i++;
            if (i + 1 < p->len) {
                const char *name = p->s + p->pos + 2;
                size_t nl = i - (p->pos + 2);
                bool gneg = nl > 0 && name[0] == '^';
                if (gneg) {
                    name++;
                    nl--;
                }
                const group_t *g = NULL;
                for (size_t k = 0; k < sizeof(posix_groups) / sizeof(posix_groups[0]); k++)
                    if (strlen(posix_groups[k].name) == nl &&
                        memcmp(posix_groups[k].name, name, nl) == 0)
                        g = &posix_groups[k];
                if (!g) {
                    free(v.r);
                    return fail_at(p, "invalid character class range", p->pos, i + 2);
                }
                if (add_group(p, &v, g, gneg, flags) < 0) {
                    free(v.r);
                    return NULL;
                }
                p->pos = i + 2;
                continue;
            }
        }
        if (at_unicode_class(p)) {
            free(v.r);
            return unicode_class_unsupported(p);
        }
        int pg = maybe_perl_group(p, &v, flags);
        if (pg < 0) {
            free(v.r);
            return NULL;
        }
        if (pg > 0)
            continue;
        size_t rstart = p->pos;
        uint32_t lo, hi;
        if (class_char(p, start, &lo) < 0) {
            free(v.r);
            return NULL;
        }
        hi = lo;
        if (p->pos + 1 < p->len && p->s[p->pos] == '-' && p->s[p->pos + 1] != ']') {
            p->pos++;
            if (class_char(p, start, &hi) < 0) {
                free(v.r);
                return NULL;
            }
            if (hi < lo) {
                free(v.r);
                return fail_at(p, "invalid character class range", rstart, p->pos);
            }
        }
        if (rvec_add_folded(&v, lo, hi, flags & F_FOLD) < 0) {
            free(v.r);
            return fail_msg(p, "out of memory");
        }
    }
    p->pos++; /* ']' */
    rvec_clean(&v);
    if (neg && rvec_negate(&v) < 0) {
        free(v.r);
        return fail_msg(p, "out of memory");
    }
    return class_node(p, &v);
}

/* A literal code point (its case orbit under (?i)). */
static node_t *literal(parser_t *p, uint32_t r, unsigned flags)
{
    uint32_t orb[4];
    size_t k = flags & F_FOLD ? fold_orbit(r, orb) : 1;
    if (k == 1) {
        node_t *n = new_node(p, N_LIT);
        if (n)
            n->rune = r;
        return n;
    }
    rvec_t v = {0};
    for (size_t i = 0; i < k; i++)
        if (rvec_add(&v, orb[i], orb[i]) < 0) {
            free(v.r);
            return fail_msg(p, "out of memory");
        }
    return class_node(p, &v);
}

static node_t *assertion(parser_t *p, unsigned bits)
{
    node_t *n = new_node(p, N_ASSERT);
    if (n)
        n->assert = bits;
    return n;
}

static node_t *parse_alt(parser_t *p, unsigned flags, int depth);

/* Marks a flag group "(?i)" that yields no node. */
static node_t no_node = {.kind = N_EMPTY};

/* A group at p->pos ('('); (?flags) alone changes *flags and returns
 * &no_node. */
static node_t *parse_group(parser_t *p, unsigned *flags, int depth)
{
    size_t start = p->pos;
    unsigned inner = *flags;
    if (depth >= META_RE_MAX_DEPTH)
        return fail_msg(p, "expression nests too deeply (more than 250 levels of groups)");
    p->pos++;
    if (p->pos < p->len && p->s[p->pos] == '?') {
        const char *t = p->s + p->pos;
        size_t rest = p->len - p->pos;
        /* Named captures: (?P<name>re) and (?<name>re). */
        size_t nameoff = rest > 3 && t[1] == 'P' && t[2] == '<'                  ? 3
                         : rest > 2 && t[1] == '<' && t[2] != '=' && t[2] != '!' ? 2
                                                                                 : 0;
        if (nameoff) {
            const char *gt = memchr(t + nameoff, '>', rest - nameoff);
            size_t name = p->pos + nameoff, end = gt ? (size_t)(gt - p->s) : p->len;
            for (size_t i = name; i < end;) { /* Go checks the UTF-8 first */
                size_t w;
                uint32_t r = utf8_decode((const unsigned char *)p->s + i, end - i, &w);
                if (r == BAD_RUNE && w == 1 && (unsigned char)p->s[i] >= 0x80)
                    return fail_at(p, "invalid UTF-8", i, gt ? end : p->len);
                i += w;
            }
            if (!gt)
                return fail_at(p, "invalid named capture", start, p->len);
            end++;
            if (gt == t + nameoff)
                return fail_at(p, "invalid named capture", start, end);
            for (const char *c = t + nameoff; c < gt; c++)
                if (!is_alnum((unsigned char)*c) && *c != '_')
                    return fail_at(p, "invalid named capture", start, end);
            p->pos = end;
        } else {
            /* Flags: (?i) (?-s) (?im-s:re) ... */
            p->pos++;
            int sign = 1;
            bool saw = false;
            for (;;) {
                if (p->pos >= p->len)
                    return fail_at(p, "invalid or unsupported Perl syntax", start, p->pos);
                char c = p->s[p->pos];
                if ((unsigned char)c >= 0x80) {
                    uint32_t r;
                    if (next_rune(p, &r) < 0)
                        return NULL;
                    return fail_at(p, "invalid or unsupported Perl syntax", start, p->pos);
                }
                p->pos++;
                unsigned bit = c == 'i'   ? F_FOLD
                               : c == 'm' ? F_MULTILINE
                               : c == 's' ? F_DOTNL
                               : c == 'U' ? F_UNGREEDY
                                          : 0;
                if (bit) {
                    inner = sign > 0 ? inner | bit : inner & ~bit;
                    saw = true;
                } else if (c == '-' && sign > 0) {
                    sign = -1;
                    saw = false;
                } else if ((c == ':' || c == ')') && (sign > 0 || saw)) {
                    if (c == ')') {
                        *flags = inner;
                        return &no_node;
                    }
                    break;
                } else {
                    return fail_at(p, "invalid or unsupported Perl syntax", start, p->pos);
                }
            }
        }
    }
    node_t *n = parse_alt(p, inner, depth + 1);
    if (!n)
        return NULL;
    if (p->pos >= p->len || p->s[p->pos] != ')')
        return fail_at(p, "missing closing )", 0, p->len);
    p->pos++;
    return n;
}

/* An escape at p->pos outside a class. */
static node_t *parse_escape_atom(parser_t *p, unsigned flags)
{
    if (p->pos + 1 < p->len) {
        switch (p->s[p->pos + 1]) {
        case 'A':
            p->pos += 2;
            return assertion(p, A_BEGIN_TEXT);
        case 'z':
            p->pos += 2;
            return assertion(p, A_END_TEXT);
        case 'b':
            p->pos += 2;
            return assertion(p, A_WORD_B);
        case 'B':
            p->pos += 2;
            return assertion(p, A_NOT_WORD_B);
        case 'C': /* any byte: Go refuses it too */
            return fail_at(p, "invalid escape sequence", p->pos, p->pos + 2);
        case 'Q': {
            /* \Q...\E: literal text. */
            size_t a = p->pos + 2, b = a;
            while (b < p->len && !(p->s[b] == '\\' && b + 1 < p->len && p->s[b + 1] == 'E'))
                b++;
            node_t *cat = new_node(p, N_CAT);
            if (!cat)
                return NULL;
            p->pos = a;
            while (p->pos < b) {
                uint32_t r;
                if (next_rune(p, &r) < 0)
                    return NULL;
                node_t *l = literal(p, r, flags);
                if (!l || add_sub(p, cat, l) < 0)
                    return NULL;
            }
            p->pos = b < p->len ? b + 2 : b;
            return cat;
        }
        default:
            break;
        }
    }
    if (at_unicode_class(p))
        return unicode_class_unsupported(p);
    rvec_t v = {0};
    int pg = maybe_perl_group(p, &v, flags);
    if (pg < 0) {
        free(v.r);
        return NULL;
    }
    if (pg > 0)
        return class_node(p, &v);
    uint32_t r;
    if (parse_escape(p, &r) < 0)
        return NULL;
    return literal(p, r, flags);
}

/* Parses "{n}", "{n,}" or "{n,m}" at p->s[i]; false if it is none (then
 * '{' is a literal, as in Go). n or m too big: *min = -1. */
static bool parse_braces(const parser_t *p, size_t i, int *min, int *max, size_t *after)
{
    int v[2] = {0, 0};
    bool has[2] = {false, false};
    if (p->s[i] != '{')
        return false;
    i++;
    for (int k = 0; k < 2; k++) {
        if (i >= p->len || p->s[i] < '0' || p->s[i] > '9') {
            if (k == 1 && i < p->len && p->s[i] == '}')
                break; /* "{n,}" */
            return false;
        }
        if (p->s[i] == '0' && i + 1 < p->len && p->s[i + 1] >= '0' && p->s[i + 1] <= '9')
            return false; /* leading zero */
        for (; i < p->len && p->s[i] >= '0' && p->s[i] <= '9'; i++)
            v[k] = v[k] < 0 || v[k] >= 100000000 ? -1 : v[k] * 10 + (p->s[i] - '0');
        has[k] = true;
        if (k == 1 || i >= p->len || p->s[i] != ',')
            break;
        i++;
        if (i >= p->len)
            return false;
        if (p->s[i] == '}') {
            v[1] = -2; /* unbounded */
            break;
        }
    }
    if (i >= p->len || p->s[i] != '}')
        return false;
    *after = i + 1;
    *min = v[0];
    if (!has[1] && v[1] != -2)
        *max = v[0];
    else if (v[1] == -2)
        *max = -1;
    else if (v[1] < 0)
        *min = -1; /* too big */
    else
        *max = v[1];
    return true;
}

/* Go's repeatIsValid: nested {n,m} counts multiply to at most lim. */
static bool repeat_valid(const node_t *n, int lim)
{
    if (n->kind == N_REPEAT) {
        int m = n->max;
        if (m == 0)
            return true;
        if (m < 0)
            m = n->min;
        if (m > lim)
            return false;
        if (m > 0)
            lim /= m;
    }
    for (size_t i = 0; i < n->n_sub; i++)
        if (!repeat_valid(n->sub[i], lim))
            return false;
    return true;
}

/* A run of atoms and repetitions up to '|', ')' or the end. A (?flags)
 * group changes *flags for the rest of the enclosing group. */
static node_t *parse_concat(parser_t *p, unsigned *flags, int depth)
{
    node_t *cat = new_node(p, N_CAT);
    if (!cat)
        return NULL;
    size_t last_repeat = SIZE_MAX; /* start of the repetition just before */
    while (p->pos < p->len && p->s[p->pos] != '|' && p->s[p->pos] != ')') {
        char c = p->s[p->pos];
        size_t start = p->pos, after = p->pos + 1;
        int min = 0, max = -1, kind = -1;
        if (c == '*')
            kind = N_STAR;
        else if (c == '+')
            kind = N_PLUS;
        else if (c == '?')
            kind = N_QUEST;
        else if (c == '{' && parse_braces(p, p->pos, &min, &max, &after)) {
            kind = N_REPEAT;
            if (min < 0 || min > META_RE_MAX_REPEAT || max > META_RE_MAX_REPEAT ||
                (max >= 0 && min > max))
                return fail_at(p, "invalid repeat count", start, after);
        }
        if (kind >= 0) {
            if (after < p->len && p->s[after] == '?')
                after++; /* non-greedy: the same set of matches */
            if (last_repeat != SIZE_MAX)
                return fail_at(p, "invalid nested repetition operator", last_repeat, after);
            if (cat->n_sub == 0)
                return fail_at(p, "missing argument to repetition operator", start, after);
            node_t *r = new_node(p, kind);
            if (!r || add_sub(p, r, cat->sub[cat->n_sub - 1]) < 0)
                return NULL;
            r->min = min;
            r->max = max;
            if (kind == N_REPEAT && (min >= 2 || max >= 2) && !repeat_valid(r, META_RE_MAX_REPEAT))
                return fail_at(p, "invalid repeat count", start, after);
            cat->sub[cat->n_sub - 1] = r;
            last_repeat = start;
            p->pos = after;
            continue;
        }
        last_repeat = SIZE_MAX;
        node_t *a;
        switch (c) {
        case '(':
            a = parse_group(p, flags, depth);
            break;
        case '[':
            a = parse_class(p, *flags);
            break;
        case '.':
            p->pos++;
            a = new_node(p, *flags & F_DOTNL ? N_ANY : N_ANYNL);
            break;
        case '^':
            p->pos++;
            a = assertion(p, *flags & F_MULTILINE ? A_BEGIN_LINE : A_BEGIN_TEXT);
            break;
        case '$':
            p->pos++;
            a = assertion(p, *flags & F_MULTILINE ? A_END_LINE : A_END_TEXT);
            break;
        case '\\':
            a = parse_escape_atom(p, *flags);
            break;
        default: {
            uint32_t r;
            if (next_rune(p, &r) < 0)
                return NULL;
            a = literal(p, r, *flags);
        }
        }
        if (!a)
            return NULL;
        if (a->kind == N_CAT) {
            /* \Q...\E: separate literals (a repetition after it applies to
             * the last one only, as in Go). */
            for (size_t i = 0; i < a->n_sub; i++)
                if (add_sub(p, cat, a->sub[i]) < 0)
                    return NULL;
        } else if (a != &no_node && add_sub(p, cat, a) < 0) {
            return NULL;
        }
    }
    return cat;
}

static node_t *parse_alt(parser_t *p, unsigned flags, int depth)
{
    node_t *alt = new_node(p, N_ALT);
    if (!alt)
        return NULL;
    for (;;) {
        node_t *c = parse_concat(p, &flags, depth);
        if (!c || add_sub(p, alt, c) < 0)
            return NULL;
        if (p->pos < p->len && p->s[p->pos] == '|') {
            p->pos++;
            continue;
        }
        return alt;
    }
}

/* ---- compiler --------------------------------------------------------- */

/* emit() runs twice: a dry run (prog NULL) only counts instructions and
 * stops as soon as there are too many, then the real one fills a program
 * of exactly that size. */
typedef struct {
    meta_re_t *re;
    size_t cap_cls, cap_pool;
    bool too_big, oom;
} emitter_t;

static uint32_t emit1(meta_re_t *re, uint8_t op, uint32_t x, uint32_t y)
{
    if (re->prog)
        re->prog[re->n] = (inst_t){op, x, y};
    return (uint32_t)re->n++;
}

static void set_y(meta_re_t *re, uint32_t pc, uint32_t y)
{
    if (re->prog)
        re->prog[pc].y = y;
}

/* A class's tables, once per class node however often it is repeated. */
static int emit_class(emitter_t *e, node_t *n)
{
    meta_re_t *re = e->re;
    if (!re->prog || n->cls_idx) {
        emit1(re, I_CLASS, n->cls_idx - 1, 0);
        return 0;
    }
    if (re->n_cls == e->cap_cls) {
        size_t cap = e->cap_cls ? e->cap_cls * 2 : 4;
        cls_t *c = realloc(re->cls, cap * sizeof(*c));
        if (!c)
            return -1;
        re->cls = c;
        e->cap_cls = cap;
    }
    cls_t *c = &re->cls[re->n_cls];
    memset(c, 0, sizeof(*c));
    c->off = (uint32_t)re->n_pool;
    for (size_t i = 0; i < n->cls.n; i++) {
        const range_t *r = &n->cls.r[i];
        for (uint32_t ch = r->lo; ch <= r->hi && ch < 128; ch++)
            c->ascii[ch / 64] |= (uint64_t)1 << (ch % 64);
        if (r->hi < 128)
            continue;
        if (re->n_pool == e->cap_pool) {
            size_t cap = e->cap_pool ? e->cap_pool * 2 : 16;
            range_t *pl = realloc(re->pool, cap * sizeof(*pl));
            if (!pl)
                return -1;
            re->pool = pl;
            e->cap_pool = cap;
        }
        re->pool[re->n_pool++] = (range_t){r->lo < 128 ? 128 : r->lo, r->hi};
        c->n++;
    }
    n->cls_idx = (uint32_t)++re->n_cls;
    emit1(re, I_CLASS, n->cls_idx - 1, 0);
    return 0;
}

/* Patches a chain of forward jumps (linked through x or y) to target. */
static void patch(meta_re_t *re, uint32_t chain, bool in_y, uint32_t target)
{
    if (!re->prog)
        return;
    while (chain != UINT32_MAX) {
        uint32_t *slot = in_y ? &re->prog[chain].y : &re->prog[chain].x;
        uint32_t next = *slot;
        *slot = target;
        chain = next;
    }
}

static int emit(emitter_t *e, node_t *n)
{
    meta_re_t *re = e->re;
    if (re->n > META_RE_MAX_INST) {
        e->too_big = true;
        return -1;
    }
    switch (n->kind) {
    case N_EMPTY:
        return 0;
    case N_LIT:
        emit1(re, I_RUNE, n->rune, 0);
        return 0;
    case N_CLASS:
        if (n->cls.n == 1 && n->cls.r[0].lo == n->cls.r[0].hi) {
            emit1(re, I_RUNE, n->cls.r[0].lo, 0);
            return 0;
        }
        if (emit_class(e, n) < 0) {
            e->oom = true;
            return -1;
        }
        return 0;
    case N_ANY:
        emit1(re, I_ANY, 0, 0);
        return 0;
    case N_ANYNL:
        emit1(re, I_ANYNL, 0, 0);
        return 0;
    case N_ASSERT:
        emit1(re, I_ASSERT, n->assert, 0);
        return 0;
    case N_CAT:
        for (size_t i = 0; i < n->n_sub; i++)
            if (emit(e, n->sub[i]) < 0)
                return -1;
        return 0;
    case N_ALT: {
        /* SPLIT L1, next; L1: a; JMP end; next: SPLIT L2, next2; ... z; end: */
        uint32_t jumps = UINT32_MAX;
        for (size_t i = 0; i < n->n_sub; i++) {
            if (i + 1 == n->n_sub) {
                if (emit(e, n->sub[i]) < 0)
                    return -1;
                break;
            }
            uint32_t split = emit1(re, I_SPLIT, (uint32_t)re->n + 1, 0);
            if (emit(e, n->sub[i]) < 0)
                return -1;
            jumps = emit1(re, I_JMP, jumps, 0);
            set_y(re, split, (uint32_t)re->n);
        }
        patch(re, jumps, false, (uint32_t)re->n);
        return 0;
    }
    case N_STAR: {
        uint32_t split = emit1(re, I_SPLIT, (uint32_t)re->n + 1, 0);
        if (emit(e, n->sub[0]) < 0)
            return -1;
        emit1(re, I_JMP, split, 0);
        set_y(re, split, (uint32_t)re->n);
        return 0;
    }
    case N_PLUS: {
        uint32_t top = (uint32_t)re->n;
        if (emit(e, n->sub[0]) < 0)
            return -1;
        emit1(re, I_SPLIT, top, (uint32_t)re->n + 1);
        return 0;
    }
    case N_QUEST: {
        uint32_t split = emit1(re, I_SPLIT, (uint32_t)re->n + 1, 0);
        if (emit(e, n->sub[0]) < 0)
            return -1;
        set_y(re, split, (uint32_t)re->n);
        return 0;
    }
    case N_REPEAT: {
        /* x{n,m} is n copies of x then m-n of x? (the same language as
         * nested optionals); x{n,} is n-1 copies then x+, x{0,} is x*. */
        if (n->max < 0 && n->min == 0) {
            node_t star = {.kind = N_STAR, .sub = n->sub, .n_sub = 1};
            return emit(e, &star);
        }
        int copies = n->max < 0 ? n->min - 1 : n->min;
        for (int i = 0; i < copies; i++)
            if (emit(e, n->sub[0]) < 0)
                return -1;
        if (n->max < 0) {
            node_t plus = {.kind = N_PLUS, .sub = n->sub, .n_sub = 1};
            return emit(e, &plus);
        }
        uint32_t outs = UINT32_MAX;
        for (int i = n->min; i < n->max; i++) {
            outs = emit1(re, I_SPLIT, (uint32_t)re->n + 1, outs);
            if (emit(e, n->sub[0]) < 0)
                return -1;
        }
        patch(re, outs, true, (uint32_t)re->n);
        return 0;
    }
    }
    return 0;
}

/* True if every path from pc 0 passes \A before consuming or matching. */
static bool is_anchored(const meta_re_t *re, uint8_t *seen, uint32_t *stack)
{
    size_t sp = 0;
    stack[sp++] = 0;
    while (sp) {
        uint32_t pc = stack[--sp];
        if (seen[pc])
            continue;
        seen[pc] = 1;
        const inst_t *in = &re->prog[pc];
        switch (in->op) {
        case I_JMP:
            stack[sp++] = in->x;
            break;
        case I_SPLIT:
            stack[sp++] = in->x;
            stack[sp++] = in->y;
            break;
        case I_ASSERT:
            if (!(in->x & A_BEGIN_TEXT))
                stack[sp++] = pc + 1;
            break;
        default:
            return false;
        }
    }
    return true;
}

int meta_re_compile(const char *pattern, size_t len, meta_re_t **out, berth_error_t **err)
{
    *out = NULL;
    parser_t p = {.s = pattern, .len = len};
    meta_re_t *re = NULL;
    node_t *root = parse_alt(&p, 0, 0);
    if (root && p.pos < p.len) /* only a ')' stops the top level early */
        fail_at(&p, "unexpected )", 0, p.len);
    if (p.failed)
        goto fail;
    re = calloc(1, sizeof(*re));
    if (!re)
        goto oom;
    emitter_t e = {.re = re};
    if (emit(&e, root) == 0)
        emit1(re, I_MATCH, 0, 0); /* dry run: count */
    if (e.too_big || re->n > META_RE_MAX_INST) {
        snprintf(p.err, sizeof(p.err),
                 "expression too large (more than %d instructions once its repetitions are "
                 "expanded)",
                 META_RE_MAX_INST);
        p.failed = true;
        goto fail;
    }
    size_t size = re->n;
    re->n = 0;
    re->prog = calloc(size, sizeof(inst_t));
    re->mark = calloc(size, sizeof(uint32_t));
    re->list[0] = calloc(size, sizeof(uint32_t));
    re->list[1] = calloc(size, sizeof(uint32_t));
    re->stack = calloc(2 * size, sizeof(uint32_t));
    if (!re->prog || !re->mark || !re->list[0] || !re->list[1] || !re->stack)
        goto oom;
    if (emit(&e, root) < 0)
        goto oom;
    emit1(re, I_MATCH, 0, 0);
    /* The mark array doubles as the "seen" set of the anchoring check. */
    re->anchored = is_anchored(re, (uint8_t *)re->mark, re->stack);
    memset(re->mark, 0, size * sizeof(uint32_t));
    free_nodes(&p);
    *out = re;
    return 0;
oom:
    free_nodes(&p);
    meta_re_free(re);
    return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
fail:
    free_nodes(&p);
    meta_re_free(re);
    return berth_error_set(err,
                           strcmp(p.err, "out of memory") == 0 ? BERTH_E_RESOURCE_EXHAUSTED
                                                               : BERTH_E_INVALID_ARGUMENT,
                           "%s", p.err);
}

void meta_re_free(meta_re_t *re)
{
    if (!re)
        return;
    free(re->prog);
    free(re->cls);
    free(re->pool);
    free(re->mark);
    free(re->list[0]);
    free(re->list[1]);
    free(re->stack);
    free(re);
}

size_t meta_re_size(const meta_re_t *re)
{
    return re ? re->n : 0;
}

/* ---- matcher ---------------------------------------------------------- */

static bool is_word(unsigned char c)
{
    return is_alnum(c) || c == '_';
}

/* Which assertions hold at byte offset pos. */
static unsigned context_at(const unsigned char *t, size_t len, size_t pos)
{
    unsigned f = 0;
    if (pos == 0)
        f |= A_BEGIN_TEXT | A_BEGIN_LINE;
    else if (t[pos - 1] == '\n')
        f |= A_BEGIN_LINE;
    if (pos == len)
        f |= A_END_TEXT | A_END_LINE;
    else if (t[pos] == '\n')
        f |= A_END_LINE;
    bool before = pos > 0 && is_word(t[pos - 1]), after = pos < len && is_word(t[pos]);
    f |= before != after ? A_WORD_B : A_NOT_WORD_B;
    return f;
}

static bool class_has(const meta_re_t *re, const cls_t *c, uint32_t r)
{
    if (r < 128)
        return (c->ascii[r / 64] >> (r % 64)) & 1;
    if (c->n == 0)
        return false; /* (the pool may be NULL then) */
    const range_t *lo = re->pool + c->off, *hi = lo + c->n;
    while (lo < hi) {
        const range_t *mid = lo + (hi - lo) / 2;
        if (r < mid->lo)
            hi = mid;
        else if (r > mid->hi)
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

/* Adds pc and its epsilon closure under context ctx to list l (marking
 * with the current generation). Returns true if the closure reaches MATCH. */
static bool add_thread(meta_re_t *re, uint32_t *l, size_t *n, uint32_t pc0, unsigned ctx,
                       size_t *steps)
{
    size_t sp = 0;
    re->stack[sp++] = pc0;
    while (sp) {
        uint32_t pc = re->stack[--sp];
        for (;;) {
            if (re->mark[pc] == re->gen)
                break;
            re->mark[pc] = re->gen;
            (*steps)++;
            const inst_t *in = &re->prog[pc];
            if (in->op == I_JMP) {
                pc = in->x;
                continue;
            }
            if (in->op == I_SPLIT) {
                re->stack[sp++] = in->y;
                pc = in->x;
                continue;
            }
            if (in->op == I_ASSERT) {
                if (!(ctx & in->x))
                    break;
                pc++;
                continue;
            }
            if (in->op == I_MATCH)
                return true;
            l[(*n)++] = pc;
            break;
        }
    }
    return false;
}

static void next_gen(meta_re_t *re)
{
    if (++re->gen == 0) {
        memset(re->mark, 0, re->n * sizeof(uint32_t));
        re->gen = 1;
    }
}

bool meta_re_match(meta_re_t *re, const char *text, size_t len, size_t *steps)
{
    const unsigned char *t = (const unsigned char *)text;
    size_t nsteps = 0, nc = 0, nn = 0;
    uint32_t *cl = re->list[0], *nl = re->list[1];
    bool found = false;
    next_gen(re);
    for (size_t pos = 0;;) {
        /* Unanchored search: a new thread starts at every position. */
        if (pos == 0 || !re->anchored)
            if (add_thread(re, cl, &nc, 0, context_at(t, len, pos), &nsteps)) {
                found = true;
                break;
            }
        if (pos == len || (nc == 0 && re->anchored))
            break;
        size_t w;
        uint32_t r = utf8_decode(t + pos, len - pos, &w);
        unsigned ctx = context_at(t, len, pos + w);
        next_gen(re);
        nn = 0;
        for (size_t i = 0; i < nc && !found; i++) {
            const inst_t *in = &re->prog[cl[i]];
            bool ok;
            nsteps++;
            switch (in->op) {
            case I_RUNE:
                ok = r == in->x;
                break;
            case I_CLASS:
                ok = class_has(re, &re->cls[in->x], r);
                break;
            case I_ANY:
                ok = true;
                break;
            case I_ANYNL:
                ok = r != '\n';
                break;
            default:
                ok = false;
            }
            if (ok && add_thread(re, nl, &nn, cl[i] + 1, ctx, &nsteps))
                found = true;
        }
        if (found)
            break;
        uint32_t *tmp = cl;
        cl = nl;
        nl = tmp;
        nc = nn;
        pos += w;
    }
    if (steps)
        *steps = nsteps;
    return found;
}
