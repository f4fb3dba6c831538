import Dispatch
import Foundation
import COpenBLAS

/// Thread control: one setting for our own parallel loops and for OpenBLAS.
public enum Threads {
    /// Threads used by `parallelFor` and OpenBLAS: `RQAT_NUM_THREADS`, else `OPENBLAS_NUM_THREADS`,
    /// else the number of cores.
    public private(set) static var count: Int = {
        let env = ProcessInfo.processInfo.environment
        if let s = env["RQAT_NUM_THREADS"] ?? env["OPENBLAS_NUM_THREADS"], let n = Int(s), n > 0 { return n }
        return ProcessInfo.processInfo.activeProcessorCount
    }()

    /// Sets the thread count for our loops and for OpenBLAS (call before starting work).
    public static func set(_ n: Int) {
        count = max(1, n)
        openblas_set_num_threads(Int32(count))
    }

    /// Runs `body(i)` for i in 0..<n, split into at most `count` contiguous chunks.
    /// Falls back to a plain loop when there is one thread or one item.
    @inline(__always)
    public static func parallelFor(_ n: Int, _ body: (Range<Int>) -> Void) {
        let chunks = min(count, n)
        if chunks <= 1 {
            if n > 0 { body(0..<n) }
            return
        }
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            let lo = n * c / chunks, hi = n * (c + 1) / chunks
            if lo < hi { body(lo..<hi) }
        }
    }
}
