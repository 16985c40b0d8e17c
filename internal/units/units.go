// Package units parses and formats byte sizes the way df -h and dd write
// them: binary multiples (K = 1024) with single-letter suffixes.
package units

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// suffixes are the multiples of 1024, from K.
const suffixes = "KMGTPE"

// ParseSize parses a byte size such as "4096", "500G", "1.5T", "1P",
// "64MiB" or "10 GB". Suffixes are binary and case-insensitive (K = 1024,
// M = 1024², ..., E = 1024⁶), optionally followed by "i", "B" or "iB".
// Fractions are allowed with a suffix and rounded down to whole bytes.
func ParseSize(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("invalid size %q: empty", s)
	}
	num := strings.TrimRightFunc(t, func(r rune) bool { return r < '0' || r > '9' && r != '.' })
	unit := strings.ToUpper(strings.TrimSpace(t[len(num):]))
	unit = strings.TrimSuffix(unit, "B")
	unit = strings.TrimSuffix(unit, "I")
	shift := 0
	switch {
	case unit == "":
	case len(unit) == 1 && strings.Contains(suffixes, unit):
		shift = 10 * (strings.Index(suffixes, unit) + 1)
	default:
		return 0, fmt.Errorf("invalid size %q: unknown unit (use a number of bytes or K, M, G, T, P, E)", s)
	}
	if num == "" || strings.HasPrefix(num, "+") || strings.HasPrefix(num, "-") {
		return 0, fmt.Errorf("invalid size %q: want a number", s)
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseUint(num, 10, 64)
		if err != nil || (shift > 0 && n > math.MaxUint64>>shift) {
			return 0, fmt.Errorf("invalid size %q: not a number or too large", s)
		}
		return n << shift, nil
	}
	if shift == 0 {
		return 0, fmt.Errorf("invalid size %q: a fraction of a byte", s)
	}
	// Exact decimal arithmetic: float64 cannot hold every byte count.
	r, ok := new(big.Rat).SetString(num)
	if !ok || r.Sign() < 0 {
		return 0, fmt.Errorf("invalid size %q: want a number", s)
	}
	r.Mul(r, new(big.Rat).SetInt(new(big.Int).Lsh(big.NewInt(1), uint(shift))))
	q := new(big.Int).Quo(r.Num(), r.Denom())
	if !q.IsUint64() {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return q.Uint64(), nil
}

// FormatSize formats n bytes as df -h does: "0B", "1023B", "1.5K", "12M",
// "1.0P". One decimal below 10 of a unit, whole units from 10 up, always
// rounded up so that a size is never understated.
func FormatSize(n uint64) string {
	if n < 1024 {
		return strconv.FormatUint(n, 10) + "B"
	}
	v := float64(n)
	i := -1
	for v >= 1024 && i < len(suffixes)-1 {
		v /= 1024
		i++
	}
	if v < 10 {
		v = math.Ceil(v*10) / 10
		if v < 10 {
			return strconv.FormatFloat(v, 'f', 1, 64) + suffixes[i:i+1]
		}
	}
	v = math.Ceil(v)
	if v >= 1024 && i < len(suffixes)-1 {
		return "1.0" + suffixes[i+1:i+2]
	}
	return strconv.FormatFloat(v, 'f', 0, 64) + suffixes[i:i+1]
}
