#if canImport(Glibc)
import Glibc
#endif

/// Locks by inode number for the changes that share the namespace lock
/// (`VolumeNamespace.changingNames`, `changingInodes`, docs/ARCHITECTURE.md, "Step 7,
/// fifth part" and "sixth part"): a change of a directory's entries holds the directory's
/// lock, a change of an inode's item, its open handles or its cached file holds the
/// inode's, so creates and removes in different directories, and chmods, opens and closes
/// of different files, run at once, while two in one directory, or of one file, take
/// turns.
///
/// A fixed table of stripes, an inode's stripe its number modulo `stripeCount`: nothing
/// is allocated per request and nothing is kept per inode. Two inodes may share a stripe,
/// so an operation holding several (at most four, but for a frame of drops of forgotten
/// inodes, which holds those inodes' stripes, `lock(all:)`) takes them in ascending stripe order,
/// which is the only order stripes are ever held in; a stripe shared by two is taken once.
/// The stripes are the innermost of the namespace's own locks but the leaves
/// (`kernelReferences`, the file cache, `handles`): a file's write lock comes before them
/// (a file change's frame takes its inode's stripe inside it, `journal`), and nothing
/// holding a stripe takes a file's write lock or another stripe out of order, but for a
/// new file nothing else can reach yet (a create attaches its journal under the
/// directory's stripe, `VolumeNamespace.changingNames`).
final class InodeLocks: @unchecked Sendable {
    // @unchecked: the mutexes are pthread's, in one allocation that never moves.
    static let stripeCount = 1024
    private let mutexes: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        mutexes = .allocate(capacity: Self.stripeCount)
        var attributes = pthread_mutexattr_t()
        pthread_mutexattr_init(&attributes)
        defer { pthread_mutexattr_destroy(&attributes) }
        #if DEBUG
        // Debug builds (every test) check: a thread taking a stripe it holds gets EDEADLK
        // and traps in `take`, where a release build would wait forever.
        pthread_mutexattr_settype(&attributes, Int32(PTHREAD_MUTEX_ERRORCHECK))
        #endif
        for stripe in 0..<Self.stripeCount {
            (mutexes + stripe).initialize(to: pthread_mutex_t())
            let rc = pthread_mutex_init(mutexes + stripe, &attributes)
            precondition(rc == 0, "pthread_mutex_init failed: \(rc)")
        }
    }

    deinit {
        for stripe in 0..<Self.stripeCount { pthread_mutex_destroy(mutexes + stripe) }
        mutexes.deallocate()
    }

    static func stripe(_ number: UInt64) -> Int { Int(truncatingIfNeeded: number % UInt64(stripeCount)) }

    /// The stripes an operation holds: one to four, ascending (a rename in one directory
    /// holds its directory's and its two children's, one across directories both
    /// directories' too). No allocation: four fields.
    struct Held {
        fileprivate(set) var first: Int
        fileprivate(set) var second: Int?
        fileprivate(set) var third: Int?
        fileprivate(set) var fourth: Int?

        /// The highest stripe held.
        var highest: Int { fourth ?? third ?? second ?? first }

        /// Whether `number`'s stripe is one of them.
        func covers(_ number: UInt64) -> Bool {
            let stripe = InodeLocks.stripe(number)
            return stripe == first || stripe == second || stripe == third || stripe == fourth
        }

        /// Adds `stripe`, at least the highest held, unless it is the highest already.
        fileprivate mutating func append(_ stripe: Int) {
            precondition(stripe >= highest, "stripes are held in ascending order")
            guard stripe != highest else { return }
            if second == nil {
                second = stripe
            } else if third == nil {
                third = stripe
            } else {
                precondition(fourth == nil, "at most four stripes are held")
                fourth = stripe
            }
        }
    }

    /// Takes `number`'s stripe.
    func lock(_ number: UInt64) -> Held {
        let stripe = Self.stripe(number)
        take(stripe)
        return Held(first: stripe)
    }

    /// Takes the stripes of `first`, `second`, `third` and `fourth` (those given) in
    /// ascending order, a stripe several of them share once.
    func lock(_ first: UInt64, _ second: UInt64, _ third: UInt64? = nil, _ fourth: UInt64? = nil) -> Held {
        var a = Self.stripe(first), b = Self.stripe(second)
        var c = third.map(Self.stripe) ?? a, d = fourth.map(Self.stripe) ?? a
        // Five compare-and-swaps sort four.
        if a > b { swap(&a, &b) }
        if c > d { swap(&c, &d) }
        if a > c { swap(&a, &c) }
        if b > d { swap(&b, &d) }
        if b > c { swap(&b, &c) }
        var held = Held(first: a)
        held.append(b)
        held.append(c)
        held.append(d)
        take(held.first)
        if let second = held.second { take(second) }
        if let third = held.third { take(third) }
        if let fourth = held.fourth { take(fourth) }
        return held
    }

    /// Adds `number`'s stripe to `held`, whose stripes are all below it: the order stays
    /// ascending, so nothing has to be let go.
    func extend(_ held: inout Held, with number: UInt64) {
        let stripe = Self.stripe(number)
        precondition(held.fourth == nil && stripe > held.highest, "stripes are taken in ascending order")
        take(stripe)
        held.append(stripe)
    }

    /// Takes the stripes of every inode in `numbers` in ascending order, each once, and
    /// returns them for `unlock(all:)`: for a frame of drops of forgotten inodes (about
    /// `VolumeNamespace.forgottenBatch` of them), which allocates its list once per frame.
    func lock(all numbers: [UInt64]) -> [Int] {
        var stripes: [Int] = []
        stripes.reserveCapacity(numbers.count)
        for stripe in numbers.map(Self.stripe).sorted() where stripe != stripes.last { stripes.append(stripe) }
        for stripe in stripes { take(stripe) }
        return stripes
    }

    func unlock(all stripes: [Int]) {
        for stripe in stripes.reversed() { give(stripe) }
    }

    func unlock(_ held: Held) {
        if let fourth = held.fourth { give(fourth) }
        if let third = held.third { give(third) }
        if let second = held.second { give(second) }
        give(held.first)
    }

    private func take(_ stripe: Int) {
        let rc = pthread_mutex_lock(mutexes + stripe)
        precondition(rc == 0, "inode lock stripe \(stripe): pthread_mutex_lock failed (taken twice by one thread?): \(rc)")
    }

    private func give(_ stripe: Int) {
        pthread_mutex_unlock(mutexes + stripe)
    }
}
