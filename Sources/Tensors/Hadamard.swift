import Foundation
import Tensors

/// A Hadamard order that has no construction here (or no Hadamard matrix at all); one line
/// naming the order and what is supported.
package struct HadamardError: UserFacingError, Equatable {
    package let message: String
    package init(_ message: String) { self.message = message }
    package var description: String { message }
}

/// Hadamard matrices for QuaRot-style rotations: n x n matrices H with entries ±1 and
/// H Hᵀ = n I, so H / sqrt(n) is orthogonal.
///
/// They exist only for n = 1, 2 and multiples of 4 (conjecturally for every multiple of 4).
/// Order n is built here as H_n = H_K ⊗ H_P with P = 2^m and a base matrix H_K:
///
/// - H_P is Sylvester's: H_1 = [1], H_2P = [[H_P, H_P], [H_P, -H_P]], so that
///   H_P[b][d] = (-1)^popcount(b & d). It is symmetric.
/// - H_K is K = 1 (Sylvester's H_1) or a Paley matrix over the field GF(q), q an odd prime
///   power: Paley I gives K = q + 1 for q ≡ 3 (mod 4), Paley II gives K = 2(q + 1) for
///   q ≡ 1 (mod 4) (see `paleyMatrix`).
///
/// Kronecker order: H_K is the outer factor. Row and column indices split as i = a·P + b with
/// a in 0..<K, b in 0..<P, and H_n[a·P + b][c·P + d] = H_K[a][c] · H_P[b][d]. The mixed-product
/// rule gives H_n H_nᵀ = (H_K H_Kᵀ) ⊗ (H_P H_Pᵀ) = K I ⊗ P I = n I.
///
/// For a requested n the decomposition with the smallest constructible K is used (the largest
/// power of two), so powers of two are pure Sylvester. Orders whose every K = n / 2^m lacks a
/// Paley construction (156, 172, 188, ...) are refused: they need other constructions
/// (Williamson's, ...) that are not built here.
package enum Hadamard {
    /// How a base matrix H_K is built.
    package enum Construction: Equatable, Sendable, CustomStringConvertible {
        /// K = 1: the 1 x 1 matrix [1].
        case sylvester
        /// K = q + 1 for a prime power q ≡ 3 (mod 4).
        case paleyI(q: Int)
        /// K = 2(q + 1) for a prime power q ≡ 1 (mod 4).
        case paleyII(q: Int)

        package var order: Int {
            switch self {
            case .sylvester: return 1
            case .paleyI(let q): return q + 1
            case .paleyII(let q): return 2 * (q + 1)
            }
        }

        package var description: String {
            switch self {
            case .sylvester: return "Sylvester"
            case .paleyI(let q): return "Paley I over GF(\(q))"
            case .paleyII(let q): return "Paley II over GF(\(q))"
            }
        }
    }

    /// Order n = K · P as a base construction of order K and a Sylvester factor P = 2^m.
    package struct Decomposition: Equatable, Sendable, CustomStringConvertible {
        package let base: Construction
        package let powerOfTwo: Int

        package var baseOrder: Int { base.order }
        package var order: Int { base.order * powerOfTwo }
        package var description: String {
            baseOrder == 1 ? "\(order) (Sylvester)" : "\(order) = \(baseOrder) x \(powerOfTwo) (\(base) ⊗ Sylvester)"
        }
    }

    /// The construction of a base matrix of order `k`, or nil. Paley I is preferred to Paley II,
    /// and prime fields to their extensions (a prime q needs no polynomial arithmetic):
    /// 12 is Paley I over GF(11), 28 Paley II over GF(13), 52 Paley II over GF(25).
    package static func construction(baseOrder k: Int) -> Construction? {
        if k == 1 { return .sylvester }
        guard k >= 4, k % 4 == 0 else { return nil }
        let q1 = k - 1                                  // Paley I: k = q + 1, q ≡ 3 (mod 4)
        let q2 = k % 8 == 4 ? k / 2 - 1 : nil           // Paley II: k = 2(q + 1), q ≡ 1 (mod 4)
        if isPrime(q1) { return .paleyI(q: q1) }
        if let q2, isPrime(q2) { return .paleyII(q: q2) }
        if primePower(q1) != nil { return .paleyI(q: q1) }
        if let q2, primePower(q2) != nil { return .paleyII(q: q2) }
        return nil
    }

    /// The decomposition of `order` with the smallest constructible base order K.
    package static func decomposition(order n: Int) throws -> Decomposition {
        guard n >= 1 else { throw HadamardError("Hadamard: order \(n) is not positive") }
        guard n <= 2 || n % 4 == 0 else {
            throw HadamardError("Hadamard: no Hadamard matrix of order \(n) exists (orders are 1, 2 or multiples of 4)")
        }
        let twos = n.trailingZeroBitCount
        for m in stride(from: twos, through: 0, by: -1) {
            if let base = construction(baseOrder: n >> m) { return Decomposition(base: base, powerOfTwo: 1 << m) }
        }
        let limit = 300
        let bases = baseOrders(upTo: min(n, limit)).map(String.init).joined(separator: ", ")
        throw HadamardError("Hadamard: no construction for order \(n) = \(n >> twos) x 2^\(twos) here; supported are "
            + "K x 2^m with K = 1 or a Paley order (q + 1, q ≡ 3 mod 4, or 2(q + 1), q ≡ 1 mod 4, q a prime power): "
            + "K in [\(bases)\(n > limit ? ", ..." : "")] (other constructions, e.g. Williamson's, are not built here)")
    }

    /// The base orders K <= `limit` that decompositions use: constructible, and not K' x 2^j for
    /// a smaller constructible K' (24 = 12 x 2 is not listed).
    package static func baseOrders(upTo limit: Int) -> [Int] {
        guard limit >= 1 else { return [] }
        return (1...limit).filter { k in
            guard construction(baseOrder: k) != nil else { return false }
            return (try? decomposition(order: k))?.baseOrder == k
        }
    }

    /// The Hadamard matrix of order `order`, row-major (order, order), entries ±1: the explicit
    /// H_K ⊗ H_P the fast transform applies. Takes 4·order² bytes (256 MiB at 8192); rotations
    /// use `HadamardTransform` instead.
    package static func matrix(order n: Int) throws -> [Float] {
        let plan = try decomposition(order: n)
        return [Float](unsafeUninitializedCapacity: n * n) { out, initialized in
            fill(plan, into: out.baseAddress!)
            initialized = n * n
        }
    }

    /// `matrix(order:)` written into `out`: (order, order), so that one buffer can serve many orders.
    package static func matrix(order n: Int, into out: UnsafeMutablePointer<Float>) throws {
        fill(try decomposition(order: n), into: out)
    }

    private static func fill(_ plan: Decomposition, into o: UnsafeMutablePointer<Float>) {
        let n = plan.order, k = plan.baseOrder, p = plan.powerOfTwo
        let base = baseMatrix(plan.base)
        // Row b of H_P and its negation, so that each block of a row is a copy.
        let plus = UnsafeMutablePointer<Float>.allocate(capacity: p), minus = UnsafeMutablePointer<Float>.allocate(capacity: p)
        defer { plus.deallocate(); minus.deallocate() }
        base.withUnsafeBufferPointer { base in
            let hk = base.baseAddress!
            for b in 0..<p {
                // H_2L = [[H_L, H_L], [H_L, -H_L]]: the second half of row b is its first half,
                // negated when bit log2(L) of b is set.
                plus[0] = 1
                minus[0] = -1
                var l = 1
                while l < p {
                    let sign: Float = b & l == 0 ? 1 : -1
                    for d in 0..<l {
                        plus[l + d] = sign * plus[d]
                        minus[l + d] = sign * minus[d]
                    }
                    l *= 2
                }
                for a in 0..<k {
                    // Row a·P + b is H_K[a][c] · (row b of H_P) for each column block c.
                    let row = o + (a * p + b) * n
                    for c in 0..<k {
                        memcpy(row + c * p, hk[a * k + c] > 0 ? plus : minus, p * MemoryLayout<Float>.stride)
                    }
                }
            }
        }
    }

    /// The base matrix of a construction, row-major (K, K), entries ±1.
    package static func baseMatrix(_ construction: Construction) -> [Int8] {
        switch construction {
        case .sylvester: return [1]
        case .paleyI(let q), .paleyII(let q): return paleyMatrix(q: q)
        }
    }

    /// Paley's Hadamard matrix over GF(q), q an odd prime power: order q + 1 when q ≡ 3 (mod 4)
    /// (Paley I), 2(q + 1) when q ≡ 1 (mod 4) (Paley II). Row-major, entries ±1.
    ///
    /// Both start from the quadratic character χ of GF(q) (χ(0) = 0, χ(a) = +1 for the nonzero
    /// squares, -1 for the non-squares; half of the nonzero elements are squares) and the
    /// Jacobsthal matrix Q[i][j] = χ(e_i - e_j) over the elements e_0 ..< e_{q-1}. Q has zero
    /// diagonal and zero row sums, Q Qᵀ = q I - J (J all ones), and since χ(-1) = (-1)^((q-1)/2)
    /// it is antisymmetric for q ≡ 3 (mod 4) and symmetric for q ≡ 1 (mod 4). Border it as
    ///
    ///     S = [[0,  1ᵀ],        (q + 1) x (q + 1), with 1 the all-ones column,
    ///          [±1, Q ]]        -1 in the border for Paley I, +1 for Paley II.
    ///
    /// - Paley I: S is antisymmetric with S Sᵀ = q I, so H = I + S has
    ///   H Hᵀ = I + S + Sᵀ + S Sᵀ = (q + 1) I.
    /// - Paley II: S = C is a symmetric conference matrix (C Cᵀ = q I, zero diagonal). With
    ///   A = [[1, 1], [1, -1]] and B = [[1, -1], [-1, -1]] (A Aᵀ = B Bᵀ = 2 I, A B = -B A),
    ///   H = C ⊗ A + I ⊗ B: each diagonal 0 of C becomes the block B and each off-diagonal
    ///   ±1 the block ±A. As C, A and B are symmetric,
    ///   H Hᵀ = (C Cᵀ) ⊗ (A Aᵀ) + C ⊗ (A B + B A) + I ⊗ (B Bᵀ) = 2q I + 0 + 2 I = 2(q + 1) I.
    package static func paleyMatrix(q: Int) -> [Int8] {
        guard let field = FiniteField(order: q) else { preconditionFailure("Paley: \(q) is not an odd prime power") }
        let chi = field.character
        // S as above; the q field rows follow the border row 0.
        let s1 = q + 1
        let border: Int8 = q % 4 == 3 ? -1 : 1
        var s = [Int8](repeating: 0, count: s1 * s1)
        for j in 1..<s1 { s[j] = 1; s[j * s1] = border }
        for i in 0..<q {
            for j in 0..<q where j != i { s[(i + 1) * s1 + j + 1] = chi[field.subtract(i, j)] }
        }
        if q % 4 == 3 {
            for i in 0..<s1 { s[i * s1 + i] = 1 }   // H = I + S
            return s
        }
        let k = 2 * s1
        var h = [Int8](repeating: 0, count: k * k)
        let a: [Int8] = [1, 1, 1, -1], b: [Int8] = [1, -1, -1, -1]   // 2 x 2, row-major
        for i in 0..<s1 {
            for j in 0..<s1 {
                let c = s[i * s1 + j]
                for r in 0..<2 {
                    for t in 0..<2 {
                        h[(2 * i + r) * k + 2 * j + t] = i == j ? b[2 * r + t] : c * a[2 * r + t]
                    }
                }
            }
        }
        return h
    }

    static func isPrime(_ n: Int) -> Bool {
        guard n >= 2 else { return false }
        var d = 2
        while d * d <= n {
            if n % d == 0 { return false }
            d += 1
        }
        return true
    }

    /// q = p^k for an odd prime p, or nil.
    static func primePower(_ q: Int) -> (p: Int, k: Int)? {
        guard q >= 3, q % 2 == 1 else { return nil }
        var p = 3
        while p * p <= q && q % p != 0 { p += 2 }
        if q % p != 0 { p = q }   // q itself is prime
        var rest = q, k = 0
        while rest % p == 0 { rest /= p; k += 1 }
        return rest == 1 ? (p, k) : nil
    }
}

/// GF(q), q = p^k for an odd prime p, just enough of it for the Paley constructions: element
/// subtraction and the quadratic character.
///
/// Element e in 0..<q stands for the polynomial Σ_t d_t x^t over the integers mod p, with d_t
/// the base-p digits of e (d_0 the least significant), taken modulo a monic irreducible f of
/// degree k. f is found by search: the first monic degree-k polynomial, in the order of its
/// coefficient digits, with no monic factor of degree 1 ... k/2 (trial division). For k = 1
/// this is plain arithmetic mod p.
struct FiniteField {
    let p: Int
    let k: Int
    let q: Int
    /// χ(e) for each element e: 0 for 0, +1 for the nonzero squares, -1 for the non-squares.
    let character: [Int8]

    init?(order q: Int) {
        guard let power = Hadamard.primePower(q) else { return nil }
        let p = power.p, k = power.k
        self.p = p
        self.k = k
        self.q = q
        // f's coefficients c_0 ... c_k, c_k = 1 (f = x for k = 1: digits are already reduced).
        let modulus = k == 1 ? [0, 1] : Self.firstIrreducible(degree: k, p: p)
        var chi = [Int8](repeating: -1, count: q)
        chi[0] = 0
        for e in 1..<q {
            let d = Self.digits(e, p: p, count: k)
            chi[Self.value(Self.reduce(Self.product(d, d, p: p), modulo: modulus, p: p), p: p)] = 1
        }
        // x ↦ x² is 2-to-1 on the nonzero elements of a field; anything else means f is not
        // irreducible.
        precondition(chi.filter { $0 == 1 }.count == (q - 1) / 2, "GF(\(q)): wrong number of squares")
        character = chi
    }

    /// a - b, digit by digit mod p (the additive group of GF(p^k) is (Z/p)^k).
    func subtract(_ a: Int, _ b: Int) -> Int {
        if k == 1 { return (a - b + p) % p }
        var a = a, b = b, out = 0, place = 1
        for _ in 0..<k {
            out += ((a % p - b % p + p) % p) * place
            a /= p
            b /= p
            place *= p
        }
        return out
    }

    static func digits(_ e: Int, p: Int, count: Int) -> [Int] {
        var e = e
        return (0..<count).map { _ in defer { e /= p }; return e % p }
    }

    static func value(_ digits: [Int], p: Int) -> Int {
        digits.reversed().reduce(0) { $0 * p + $1 }
    }

    /// The product of two polynomials (coefficients low to high) mod p.
    static func product(_ a: [Int], _ b: [Int], p: Int) -> [Int] {
        var out = [Int](repeating: 0, count: a.count + b.count - 1)
        for i in a.indices where a[i] != 0 {
            for j in b.indices { out[i + j] = (out[i + j] + a[i] * b[j]) % p }
        }
        return out
    }

    /// The remainder of a modulo the monic g (g.last == 1), as deg(g) coefficients, mod p.
    static func reduce(_ a: [Int], modulo g: [Int], p: Int) -> [Int] {
        let d = g.count - 1
        var a = a
        if a.count < d { a += [Int](repeating: 0, count: d - a.count) }
        for top in stride(from: a.count - 1, through: d, by: -1) where a[top] != 0 {
            // x^top ≡ x^(top-d) · (x^d - g) removes the leading term.
            let c = a[top]
            for t in 0...d { a[top - d + t] = ((a[top - d + t] - c * g[t]) % p + p) % p }
        }
        return Array(a.prefix(d))
    }

    /// The first monic irreducible polynomial of `degree` >= 2 over Z/p, coefficients low to high.
    static func firstIrreducible(degree: Int, p: Int) -> [Int] {
        var size = 1
        for _ in 0..<degree { size *= p }
        for code in 0..<size {
            let f = digits(code, p: p, count: degree) + [1]
            if f[0] == 0 { continue }   // divisible by x
            var irreducible = true
            var divisors = p   // monic polynomials of degree d: p^d
            for d in 1...(degree / 2) {
                for gcode in 0..<divisors {
                    let g = digits(gcode, p: p, count: d) + [1]
                    if reduce(f, modulo: g, p: p).allSatisfy({ $0 == 0 }) { irreducible = false; break }
                }
                if !irreducible { break }
                divisors *= p
            }
            if irreducible { return f }
        }
        preconditionFailure("no irreducible polynomial of degree \(degree) over GF(\(p))")
    }
}

/// The orthonormal Hadamard rotation of rows of width n = K · P, built once per size:
/// y = x · H / sqrt(n) with x a row vector and H = H_K ⊗ H_P (`Hadamard.matrix(order: n)`).
/// `applyTransposed` computes y = x · Hᵀ / sqrt(n), its inverse (H Hᵀ = n I). Paley base
/// matrices are not symmetric, so the two differ when K > 1.
///
/// The fast path, per row: view x as X: (K, P) row-major (x[a·P + b] = X[a][b]). Then
///
///     (x (A ⊗ B))[c·P + d] = Σ_a Σ_b X[a][b] A[a][c] B[b][d] = (Aᵀ X B)[c][d],
///
/// so with A = H_K and B = H_P (symmetric): X B is the fast Walsh–Hadamard transform of each of
/// the K contiguous chunks (P/2 · log2 P butterflies each), and Aᵀ (X B) mixes the K chunks
/// with a dense K x K matrix (K² · P = n K multiply-adds). The transpose is A X B, since
/// (A ⊗ B)ᵀ = Aᵀ ⊗ B. That is O(n log n + n K) per row instead of the n² of a matrix product.
package struct HadamardTransform: Sendable {
    package let size: Int
    package let decomposition: Hadamard.Decomposition
    /// Aᵀ / sqrt(n), row-major (K, K): output chunk c = Σ_a forwardMixing[c·K + a] · chunk a.
    private let forwardMixing: [Float]
    /// A / sqrt(n), the same way, for the transposed transform.
    private let transposedMixing: [Float]

    package init(size: Int) throws {
        let plan = try Hadamard.decomposition(order: size)
        self.size = size
        decomposition = plan
        let k = plan.baseOrder
        let a = Hadamard.baseMatrix(plan.base)
        let scale = 1 / Double(size).squareRoot()
        var forward = [Float](repeating: 0, count: k * k), transposed = forward
        for c in 0..<k {
            for j in 0..<k {
                forward[c * k + j] = Float(Double(a[j * k + c]) * scale)
                transposed[c * k + j] = Float(Double(a[c * k + j]) * scale)
            }
        }
        forwardMixing = forward
        transposedMixing = transposed
    }

    /// x ← x · H / sqrt(n) for each row. x: (rows, size). `parallel: false` keeps the rows on
    /// the calling thread (a caller already inside `Threads.parallelFor`).
    package func apply(_ x: UnsafeMutablePointer<Float>, rows: Int, parallel: Bool = true) {
        rotate(x, rows: rows, mixing: forwardMixing, parallel: parallel)
    }

    /// x ← x · Hᵀ / sqrt(n) for each row, the inverse of `apply`. x: (rows, size).
    package func applyTransposed(_ x: UnsafeMutablePointer<Float>, rows: Int, parallel: Bool = true) {
        rotate(x, rows: rows, mixing: transposedMixing, parallel: parallel)
    }

    private func rotate(_ x: UnsafeMutablePointer<Float>, rows: Int, mixing: [Float], parallel: Bool) {
        let n = size, k = decomposition.baseOrder, p = decomposition.powerOfTwo
        let scale = Float(1 / Double(n).squareRoot())
        mixing.withUnsafeBufferPointer { mixing in
            let m = mixing.baseAddress!
            let run: (Range<Int>) -> Void = { range in
                let scratch = k > 1 ? UnsafeMutablePointer<Float>.allocate(capacity: n) : nil
                defer { scratch?.deallocate() }
                for r in range {
                    let row = x + r * n
                    for a in 0..<k { Self.walshHadamard(row + a * p, count: p) }
                    if let scratch {
                        Self.mix(row, into: scratch, mixing: m, chunks: k, width: p)
                        row.update(from: scratch, count: n)
                    } else {
                        for i in 0..<n { row[i] *= scale }
                    }
                }
            }
            if parallel { Threads.parallelFor(rows, run) } else { run(0..<rows) }
        }
    }

    /// x ← x · H_P in place (Sylvester H_P, P = count a power of two, unnormalised): log2 P
    /// rounds of butterflies (u, v) → (u + v, u - v) on pairs h apart, h = 1, 2, 4, ...
    static func walshHadamard(_ x: UnsafeMutablePointer<Float>, count: Int) {
        var h = 1
        while h < count {
            var start = 0
            while start < count {
                let lo = x + start, hi = x + start + h
                for j in 0..<h {
                    let u = lo[j], v = hi[j]
                    lo[j] = u + v
                    hi[j] = u - v
                }
                start += 2 * h
            }
            h *= 2
        }
    }

    /// out chunk c = Σ_a mixing[c·K + a] · x chunk a. x, out: (chunks, width); mixing: (chunks, chunks).
    static func mix(_ x: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>,
                    mixing: UnsafePointer<Float>, chunks k: Int, width p: Int) {
        for c in 0..<k {
            let o = out + c * p, coefficients = mixing + c * k
            let w0 = coefficients[0]
            for j in 0..<p { o[j] = w0 * x[j] }
            for a in 1..<k {
                let w = coefficients[a], src = x + a * p
                for j in 0..<p { o[j] += w * src[j] }
            }
        }
    }
}
