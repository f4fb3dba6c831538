import CKernels
import COpenBLAS
import Foundation

/// Thread control: one setting for our own parallel loops (a spinning pool in CKernels, since
/// decoding runs hundreds of microsecond-long loops per token) and for OpenBLAS.
package enum Threads {
    /// Threads used by `parallelFor` and OpenBLAS: `RQAT_NUM_THREADS`, else `OPENBLAS_NUM_THREADS`,
    /// else the number of cores.
    package private(set) static var count: Int = {
        let env = ProcessInfo.processInfo.environment
        if let s = env["RQAT_NUM_THREADS"] ?? env["OPENBLAS_NUM_THREADS"], let n = Int(s), n > 0 { return n }
        return ProcessInfo.processInfo.activeProcessorCount
    }()

    private static let poolStarted: Void = rqat_pool_set_threads(Int32(count))

    /// Sets the thread count for our loops and for OpenBLAS (call before starting work).
    package static func set(_ n: Int) {
        count = max(1, n)
        rqat_pool_set_threads(Int32(count))
        openblas_set_num_threads(Int32(count))
    }

    /// The kernel set OpenBLAS chose for this CPU ("Cooperlake", "SkylakeX", ...). Its sgemm
    /// rounds differently from one set to another, so bit-exact figures hold per kernel set.
    package static var blasCoreName: String {
        openblas_get_corename().map { String(cString: $0) } ?? "unknown"
    }

    /// `parallelFor` whose tasks call BLAS themselves: OpenBLAS runs single-threaded meanwhile,
    /// so its threads do not compete with ours for the cores.
    package static func parallelForWithSerialBLAS(_ n: Int, _ body: (Range<Int>) -> Void) {
        guard count > 1 && n > 1 else { parallelFor(n, body); return }
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(Int32(count)) }
        parallelFor(n, body)
    }

    private struct Job {
        let n: Int
        let chunks: Int
        let body: (Range<Int>) -> Void
    }

    /// Runs `body` over 0..<n split into at most `count` contiguous ranges, in parallel.
    /// Falls back to a plain call when there is one thread or one item.
    package static func parallelFor(_ n: Int, _ body: (Range<Int>) -> Void) {
        _ = poolStarted
        let chunks = min(count, n)
        if chunks <= 1 {
            if n > 0 { body(0..<n) }
            return
        }
        withoutActuallyEscaping(body) { body in
            var job = Job(n: n, chunks: chunks, body: body)
            withUnsafeMutablePointer(to: &job) { pointer in
                rqat_pool_run(chunks, { context, chunk in
                    let job = context!.assumingMemoryBound(to: Job.self).pointee
                    let lo = job.n * chunk / job.chunks, hi = job.n * (chunk + 1) / job.chunks
                    if lo < hi { job.body(lo..<hi) }
                }, pointer)
            }
        }
    }
}
