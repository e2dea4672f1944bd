# gitrev.cmake - write gen/sink/gitrev.h with the current git revision (and
# "-dirty" for uncommitted changes), rewriting it only when it changes, so
# every build's --version and reports name the code they were built from.
# A build without .git (a container build context, a tarball) can name its
# revision with -DSINK_GIT_REV=... at configure time.
if(REV_OVERRIDE)
  set(rev "${REV_OVERRIDE}")
else()
  execute_process(COMMAND git rev-parse --short=12 HEAD WORKING_DIRECTORY ${SRC}
    OUTPUT_VARIABLE rev OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
endif()
if(REV_OVERRIDE)
elseif(NOT rev)
  set(rev "unknown")
else()
  execute_process(COMMAND git diff --quiet HEAD -- WORKING_DIRECTORY ${SRC}
    RESULT_VARIABLE dirty ERROR_QUIET)
  if(dirty)
    set(rev "${rev}-dirty")
  endif()
endif()
set(text "/* Generated at build time by cmake/gitrev.cmake. */\n#define SINK_GIT_REV \"${rev}\"\n")
if(EXISTS ${OUT})
  file(READ ${OUT} old)
endif()
if(NOT "${old}" STREQUAL "${text}")
  file(WRITE ${OUT} "${text}")
endif()
