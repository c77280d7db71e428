//! nook-newuidmap / nook-newgidmap: not built yet (issue 3).
